"""The program's bucket prefix: `<bucket>/<program>/`, where its snapshots are published.

`ensure_prefix` proves the prefix is reachable and writable by creating `_program.json`
(program, tenant, createdAt) if it is missing, with a create-only write (GCS
`ifGenerationMatch=0`, `os.link` for folders), so two provisioners racing agree on one marker.
A marker naming another tenant is an error: a prefix is never shared between tenants.
Buckets are never created here (ops own them); a missing bucket raises `BucketNotFound`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson

from gamify.naming import ProgramNames
from gamify.program import DNS_LABEL
from gamify.storage import BucketNotFound, StorageError, join_url, open_store

MARKER = "_program.json"
MARKER_CACHE_CONTROL = "no-cache"

__all__ = ["MARKER", "BucketNotFound", "PrefixConflict", "delete_prefix", "ensure_prefix", "prefix_url"]


class PrefixConflict(StorageError):
    """The prefix is already marked as another tenant's."""


def prefix_url(bucket_url: str, program: str) -> str:
    """`gs://b/p` + `acme-2027` -> `gs://b/p/acme-2027/` (the program's snapshot URL)."""
    if not re.match(DNS_LABEL, program) or len(program) > 40:
        raise ValueError(f"invalid program id {program!r}")
    return join_url(bucket_url, ProgramNames(program).bucket_prefix)


def _marker_tenant(data: bytes | None) -> str | None:
    try:
        document = orjson.loads(data or b"null")
    except orjson.JSONDecodeError:
        return None
    tenant = document.get("tenant") if isinstance(document, dict) else None
    return tenant if isinstance(tenant, str) else None


def ensure_prefix(bucket_url: str, program: str, tenant: str) -> str:
    """Make sure `<bucket_url>/<program>/` is usable by `program`; return its URL. Idempotent."""
    url = prefix_url(bucket_url, program)
    store = open_store(url)
    marker = {
        "program": program,
        "tenant": tenant,
        "createdAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    # The create-only write is the reachability and permission check, even when the marker exists.
    created = store.put_if_absent(MARKER, orjson.dumps(marker), cache_control=MARKER_CACHE_CONTROL)
    if not created:
        owner = _marker_tenant(store.get(MARKER))
        if owner != tenant:
            raise PrefixConflict(f"{url} belongs to tenant {owner!r}, not {tenant!r}")
    return store.base_url


def delete_prefix(bucket_url: str, program: str) -> int:
    """Delete every object of `program` (retention `onDelete: Delete`); return how many."""
    return open_store(prefix_url(bucket_url, program)).delete_prefix("")
