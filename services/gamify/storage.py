"""Object storage behind one small interface: Google Cloud Storage (`gs://`) or a folder (`file://`).

`open_store("gs://bucket/prefix")` or `open_store("file:///path")` returns an `ObjectStore` whose
keys are relative to that base. A key can never leave the base: empty segments, `.`/`..`,
absolute paths and backslashes are rejected before any I/O, so the snapshot writer of program A
cannot write outside A's prefix whatever user ids it is given.

Readers never see half an object: a GCS object write is atomic by nature (the new generation
appears whole), and a `file://` write goes to a temporary file in the same folder that is then
renamed over the target (`os.replace`, atomic on POSIX).

`gs://` uses the real google-cloud-storage client. With `STORAGE_EMULATOR_HOST` set (tests, the
one-machine mode) it talks to the emulator with anonymous credentials and the project from
`GOOGLE_CLOUD_PROJECT` (default `local`); otherwise Application Default Credentials (Workload
Identity in the cluster). Buckets are never created here: a missing bucket is `BucketNotFound`.

`file://` has no HTTP headers: content type and cache control are accepted and ignored (a
static file server in front decides them). Missing folders are created, because a local folder
plays the bucket's role and the one-machine mode owns it.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

DEFAULT_CACHE_CONTROL = "no-cache"
# Enough pooled HTTP connections for the snapshot writer's upload threads.
HTTP_POOL_SIZE = 32
_TEMP_SUFFIX = ".tmp"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


class StorageError(Exception):
    """The store cannot be used (bad URL, unreachable, not writable)."""


class BucketNotFound(StorageError):
    """The bucket of a `gs://` URL does not exist (buckets are created by ops, not by us)."""


class InvalidKey(StorageError, ValueError):
    """A key or prefix that would escape the store's base or is not a plain relative path."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str | None
    cache_control: str | None
    generation: int  # changes on every write (GCS generation; file: mtime in ns)
    updated: datetime


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise `InvalidKey`."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("empty object key")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKey(f"object key {key!r} must be a relative path with `/` separators")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"object key {key!r} has an empty, `.` or `..` segment")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty (everything), or a key-like string that may end with `/`."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def join_url(base_url: str, *segments: str) -> str:
    """`join_url("gs://b/p", "acme")` -> `gs://b/p/acme/` (each segment checked like a key)."""
    url = base_url.rstrip("/")
    for segment in segments:
        url += "/" + check_key(segment.strip("/"))
    return url + "/"


class ObjectStore(ABC):
    """Objects under one base URL; every key is relative to `base_url`."""

    base_url: str

    @abstractmethod
    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> None:
        """Write (or replace) one object atomically."""

    @abstractmethod
    def put_if_absent(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> bool:
        """Create the object only if it does not exist; True when this call created it."""

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Metadata of one object, or None when it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys that start with `prefix`, sorted."""

    @abstractmethod
    def delete_prefix(self, prefix: str = "") -> int:
        """Delete every object whose key starts with `prefix`; return how many."""

    def delete(self, key: str) -> bool:
        """Delete one object (exactly `key`, not a prefix); True when it existed."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete single objects")

    def child(self, prefix: str) -> ObjectStore:
        """A store rooted at `<base>/<prefix>/`."""
        return open_store(join_url(self.base_url, prefix))


# --- file:// ---------------------------------------------------------------------------------


class FileStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.base_url = root.as_uri().rstrip("/") + "/"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _write_temp(self, target: Path, data: bytes) -> Path:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create folder {target.parent}: {exc}") from exc
        # Same folder as the target, so the rename below never crosses file systems.
        temp = target.parent / f".{target.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise StorageError(f"cannot write {target}: {exc}") from exc
        return temp

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> None:
        target = self._path(key)
        temp = self._write_temp(target, data)
        try:
            os.replace(temp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise StorageError(f"cannot write {target}: {exc}") from exc

    def put_if_absent(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> bool:
        target = self._path(key)
        temp = self._write_temp(target, data)
        try:
            os.link(temp, target)  # atomic, and fails if the target exists
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot write {target}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            result = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(
            key=key,
            size=result.st_size,
            content_type=mimetypes.guess_type(key)[0],
            cache_control=None,
            generation=result.st_mtime_ns,
            updated=datetime.fromtimestamp(result.st_mtime, UTC),
        )

    def _walk(self) -> Iterator[tuple[str, Path]]:
        if not self.root.is_dir():
            return
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and name.endswith(_TEMP_SUFFIX):
                    continue  # an upload in progress
                path = Path(folder) / name
                yield path.relative_to(self.root).as_posix(), path

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        return sorted(key for key, _ in self._walk() if key.startswith(prefix))

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def delete_prefix(self, prefix: str = "") -> int:
        check_prefix(prefix)
        deleted = 0
        for key, path in list(self._walk()):
            if key.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    deleted += 1
        # Remove folders left empty, deepest first; keep the root itself.
        if self.root.is_dir():
            for folder, _, _ in sorted(os.walk(self.root), key=lambda item: -len(item[0])):
                if Path(folder) != self.root:
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)
        return deleted


# --- gs:// -----------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _gcs_client(emulator_host: str | None) -> Any:
    from google.cloud import storage
    from requests.adapters import HTTPAdapter

    if emulator_host:
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "local")
        client = storage.Client(project=project, credentials=AnonymousCredentials())
    else:
        client = storage.Client()  # Application Default Credentials (Workload Identity)
    # The default pool keeps 10 connections; the snapshot writer uploads from more threads.
    adapter = HTTPAdapter(pool_connections=HTTP_POOL_SIZE, pool_maxsize=HTTP_POOL_SIZE)
    client._http.mount("https://", adapter)
    client._http.mount("http://", adapter)
    return client


class GcsStore(ObjectStore):
    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        from google.api_core import exceptions
        from google.cloud.storage.retry import DEFAULT_RETRY

        self._errors = exceptions
        # Snapshot objects are rewritten whole with the same content: retrying is always safe.
        self._retry = DEFAULT_RETRY
        self.bucket_name = bucket
        self.prefix = prefix  # "" or ending with "/"
        self.base_url = f"gs://{bucket}/{prefix}"
        self._bucket = client.bucket(bucket)

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _missing_bucket(self, exc: Exception) -> BucketNotFound:
        return BucketNotFound(f"bucket gs://{self.bucket_name} does not exist ({exc})")

    def _upload(self, key: str, data: bytes, content_type: str, cache_control: str, **kw: Any) -> None:
        blob = self._bucket.blob(self._name(key))
        blob.cache_control = cache_control
        try:
            blob.upload_from_string(data, content_type=content_type, retry=self._retry, **kw)
        except self._errors.NotFound as exc:
            raise self._missing_bucket(exc) from exc
        except self._errors.Forbidden as exc:
            raise StorageError(f"not allowed to write {self.base_url}{key}: {exc}") from exc

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> None:
        self._upload(key, data, content_type, cache_control)

    def put_if_absent(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        cache_control: str = DEFAULT_CACHE_CONTROL,
    ) -> bool:
        try:
            self._upload(key, data, content_type, cache_control, if_generation_match=0)
            return True
        except self._errors.PreconditionFailed:
            return False

    def get(self, key: str) -> bytes | None:
        try:
            data: bytes = self._bucket.blob(self._name(key)).download_as_bytes(retry=self._retry)
            return data
        except self._errors.NotFound:
            return None

    def stat(self, key: str) -> ObjectInfo | None:
        blob = self._bucket.get_blob(self._name(key), retry=self._retry)
        if blob is None:
            return None
        return ObjectInfo(
            key=key,
            size=blob.size or 0,
            content_type=blob.content_type,
            cache_control=blob.cache_control,
            generation=int(blob.generation or 0),
            updated=blob.updated,
        )

    def _blobs(self, prefix: str) -> list[Any]:
        check_prefix(prefix)
        try:
            return list(self._bucket.list_blobs(prefix=self.prefix + prefix, retry=self._retry))
        except self._errors.NotFound as exc:
            raise self._missing_bucket(exc) from exc

    def list(self, prefix: str = "") -> list[str]:
        return sorted(blob.name[len(self.prefix) :] for blob in self._blobs(prefix))

    def delete(self, key: str) -> bool:
        try:
            self._bucket.blob(self._name(key)).delete(retry=self._retry)
            return True
        except self._errors.NotFound:
            return False

    def delete_prefix(self, prefix: str = "") -> int:
        deleted = 0
        for blob in self._blobs(prefix):
            try:
                blob.delete(retry=self._retry)
                deleted += 1
            except self._errors.NotFound:
                pass  # deleted concurrently
        return deleted


# --- opening ---------------------------------------------------------------------------------


def open_store(url: str) -> ObjectStore:
    """An `ObjectStore` for `gs://bucket[/prefix]` or `file:///absolute/path`."""
    parsed = urlparse(url)
    if parsed.scheme == "gs":
        bucket = parsed.netloc
        if not _BUCKET_NAME.match(bucket):
            raise StorageError(f"invalid bucket name in {url!r}")
        prefix = parsed.path.strip("/")
        if prefix:
            check_key(prefix)
            prefix += "/"
        return GcsStore(bucket, prefix, _gcs_client(os.environ.get("STORAGE_EMULATOR_HOST") or None))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file URL {url!r} must be file:///absolute/path")
        path = unquote(parsed.path)
        if not path.startswith("/") or ".." in path.split("/"):
            raise StorageError(f"file URL {url!r} must be file:///absolute/path")
        return FileStore(Path(path))
    raise StorageError(f"unsupported storage URL {url!r}: use gs://bucket/prefix or file:///path")
