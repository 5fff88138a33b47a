"""Object storage against the GCS emulator (real client, STORAGE_EMULATOR_HOST) and `file://`;
the program's bucket prefix (`gamify.provisioning.bucket`)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gamify.provisioning import bucket as bucket_prefix
from gamify.storage import BucketNotFound, InvalidKey, ObjectStore, StorageError, join_url, open_store
from tests.conftest import unique_program_id

ESCAPING_KEYS = [
    "../other/x.json",
    "a/../../x.json",
    "/etc/passwd",
    "a//b.json",
    "a/./b.json",
    "",
    ".",
    "a\\b",
]


@pytest.fixture(params=["gs", "file"])
def base_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A bucket base of each kind; the gs one is a fresh emulator bucket."""
    if request.param == "gs":
        name = request.getfixturevalue("gcs_bucket")
        return f"gs://{name}/base"
    root = tmp_path / "bucket"
    return root.as_uri()


@pytest.fixture
def store(base_url: str) -> ObjectStore:
    return open_store(join_url(base_url, "program-a"))


def test_put_get_list_delete(store: ObjectStore, base_url: str) -> None:
    assert store.base_url == base_url.rstrip("/") + "/program-a/"
    assert store.get("users/u-1.json") is None
    assert store.list() == []

    store.put("users/u-1.json", b'{"user":"u-1"}', cache_control="private, max-age=60")
    store.put("users/u-2.json", b'{"user":"u-2"}')
    store.put("catalog.json", b"{}")
    store.put("users/u-1.json", b'{"user":"u-1","v":2}')  # replaced whole

    assert store.get("users/u-1.json") == b'{"user":"u-1","v":2}'
    assert store.list() == ["catalog.json", "users/u-1.json", "users/u-2.json"]
    assert store.list("users/") == ["users/u-1.json", "users/u-2.json"]
    assert store.delete_prefix("users/") == 2
    assert store.list() == ["catalog.json"]
    assert store.delete_prefix() == 1
    assert store.list() == []


def test_gcs_objects_carry_their_headers(gcs_bucket: str, gcs_client: Any) -> None:
    store = open_store(f"gs://{gcs_bucket}/snapshots/p1")
    store.put("users/u-1.json", b"{}", cache_control="private, max-age=60")
    blob = gcs_client.bucket(gcs_bucket).get_blob("snapshots/p1/users/u-1.json")
    assert blob.content_type == "application/json"
    assert blob.cache_control == "private, max-age=60"
    info = store.stat("users/u-1.json")
    assert info is not None
    assert (info.content_type, info.cache_control, info.size) == (
        "application/json",
        "private, max-age=60",
        2,
    )
    store.put("users/u-1.json", b"{}", cache_control="private, max-age=60")
    again = store.stat("users/u-1.json")
    assert again is not None and again.generation != info.generation
    assert store.stat("users/missing.json") is None


@pytest.mark.parametrize("key", ESCAPING_KEYS)
def test_keys_cannot_escape_the_base(store: ObjectStore, base_url: str, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put(key, b"{}")
    with pytest.raises(InvalidKey):
        store.get(key)
    sibling = open_store(join_url(base_url, "program-b"))
    parent = open_store(base_url)
    assert sibling.list() == []
    assert [k for k in parent.list() if not k.startswith("program-a/")] == []


@pytest.mark.parametrize("prefix", ["../", "/abs", "a//", "../program-b/"])
def test_listing_and_deleting_cannot_escape_either(store: ObjectStore, base_url: str, prefix: str) -> None:
    sibling = open_store(join_url(base_url, "program-b"))
    sibling.put("users/u.json", b"{}")
    with pytest.raises(InvalidKey):
        store.list(prefix)
    with pytest.raises(InvalidKey):
        store.delete_prefix(prefix)
    assert sibling.list() == ["users/u.json"]


def test_a_sibling_prefix_with_the_same_start_is_not_touched(base_url: str) -> None:
    # `program-a/` must not match `program-ab/` when listing or deleting.
    program_a = open_store(join_url(base_url, "program-a"))
    program_ab = open_store(join_url(base_url, "program-ab"))
    program_a.put("x.json", b"{}")
    program_ab.put("x.json", b"{}")
    assert program_a.delete_prefix() == 1
    assert program_ab.list() == ["x.json"]


def test_put_if_absent(store: ObjectStore) -> None:
    assert store.put_if_absent("_program.json", b'{"v":1}')
    assert not store.put_if_absent("_program.json", b'{"v":2}')
    assert store.get("_program.json") == b'{"v":1}'


def test_file_writes_are_atomic_for_readers(tmp_path: Path) -> None:
    store = open_store((tmp_path / "bucket").as_uri())
    versions = [bytes([65 + i]) * 2_000_000 for i in range(4)]
    store.put("big.json", versions[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            data = store.get("big.json")
            assert data is not None
            seen.add(data[:1] + bytes([len(set(data))]) + len(data).to_bytes(4, "big"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(5):
            for version in versions:
                store.put("big.json", version)
    finally:
        stop.set()
        reader.join()
    # Every read saw one whole version: one distinct byte, full length.
    assert all(sample[1] == 1 and int.from_bytes(sample[2:], "big") == 2_000_000 for sample in seen)
    assert [p.name for p in (tmp_path / "bucket").iterdir()] == ["big.json"]  # no temp files left


def test_missing_gcs_bucket_is_a_clear_error(gcs_emulator: str) -> None:
    store = open_store(f"gs://missing-{secrets.token_hex(6)}/p")
    with pytest.raises(BucketNotFound, match="does not exist"):
        store.put("x.json", b"{}")
    with pytest.raises(BucketNotFound):
        store.list()


@pytest.mark.parametrize(
    "url", ["s3://bucket/x", "gs://Bad_Bucket/x", "gs://b/../x", "file://host/x", "file:///a/../b", "/tmp/x"]
)
def test_unsupported_or_unsafe_urls(url: str) -> None:
    with pytest.raises(StorageError):
        open_store(url)


# --- the program's bucket prefix -------------------------------------------------------------


@pytest.fixture
def program_id() -> Iterator[str]:
    yield unique_program_id("bkt")


def test_ensure_prefix_marks_the_prefix_once(base_url: str, program_id: str) -> None:
    url = bucket_prefix.ensure_prefix(base_url, program_id, "acme")
    assert url == base_url.rstrip("/") + f"/{program_id}/"
    store = open_store(url)
    marker = orjson.loads(store.get("_program.json") or b"")
    assert marker["program"] == program_id
    assert marker["tenant"] == "acme"
    assert marker["createdAt"].endswith("Z")

    assert bucket_prefix.ensure_prefix(base_url, program_id, "acme") == url
    assert orjson.loads(store.get("_program.json") or b"") == marker  # not rewritten


def test_a_prefix_belongs_to_one_tenant(base_url: str, program_id: str) -> None:
    bucket_prefix.ensure_prefix(base_url, program_id, "acme")
    with pytest.raises(bucket_prefix.PrefixConflict, match="acme"):
        bucket_prefix.ensure_prefix(base_url, program_id, "globex")


def test_ensure_prefix_in_a_missing_bucket_fails(gcs_emulator: str, program_id: str) -> None:
    with pytest.raises(BucketNotFound):
        bucket_prefix.ensure_prefix(f"gs://missing-{secrets.token_hex(6)}", program_id, "acme")


def test_ensure_prefix_rejects_a_bad_program_id(base_url: str) -> None:
    with pytest.raises(ValueError):
        bucket_prefix.ensure_prefix(base_url, "../escape", "acme")


def test_delete_prefix_removes_only_that_program(base_url: str, program_id: str) -> None:
    other_id = unique_program_id("bkt")
    mine = open_store(bucket_prefix.ensure_prefix(base_url, program_id, "acme"))
    other = open_store(bucket_prefix.ensure_prefix(base_url, other_id, "acme"))
    mine.put("users/u-1.json", b"{}")
    mine.put("manifest.json", b"{}")
    other.put("manifest.json", b"{}")

    assert bucket_prefix.delete_prefix(base_url, program_id) == 3  # and the marker
    assert mine.list() == []
    assert other.list() == ["_program.json", "manifest.json"]
    assert bucket_prefix.delete_prefix(base_url, program_id) == 0  # idempotent
