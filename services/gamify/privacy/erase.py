"""Erase one employee from one program: database rows, snapshot object, stream messages, audit.

    report = erase_user(ErasureTarget(program, database_url, snapshot_url, nats_url), "u-1029",
                        requested_by="dpo@acme")

Order, and why:
1. take the program's snapshot lock (the one `gamify.snapshots.writer` holds for a whole run),
   so no snapshot run is between reading the user and uploading `users/<user>.json`: a run that
   started before waits for nothing and finishes first; one that starts later reads no user;
2. the database, in one transaction (`rows`): from its commit on, the scorer ignores the user;
3. delete `users/<user>.json` from the bucket, still under the snapshot lock, then release it.
   Leaderboards drop the user at the next snapshot run (they are rebuilt from the database);
4. delete the user's messages from the program's stream (`stream`): the longest step, and one
   that needs no lock;
5. complete the audit row with every count and `finished_at`.

Idempotent: each step removes what is left, so running it again after a failure finishes the
job, and running it after a success removes nothing (and records that it was asked again).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from gamify.db import tables as t
from gamify.logs import get_logger
from gamify.privacy import identity, rows
from gamify.privacy.stream import Progress, erase_from_stream
from gamify.storage import ObjectStore, open_store

# gamify.events.Event.user: anything else was never accepted, so there is nothing to erase.
USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LOCK_WAIT_SECONDS = 120.0
COUNT_ORDER = (
    "events",
    "ledger",
    "balances",
    "badges",
    "redemptions",
    "capCounters",
    "ruleCounts",
    "boardPoints",
    "snapshotObjects",
    "streamMessages",
)

log = get_logger(__name__)


class ErasureError(RuntimeError):
    """The erasure could not be done (nothing was committed if it failed before the database)."""


@dataclass(frozen=True)
class ErasureTarget:
    """Where one program keeps its data."""

    program: str
    # The program user's URL (its own schema); holds a password, so kept out of repr.
    database_url: str = field(repr=False)
    snapshot_url: str = ""  # `<bucket>/<program>/`
    nats_url: str | None = None  # None: leave the stream alone (e.g. deleted with the program)


@dataclass(frozen=True)
class ErasureReport:
    program: str
    erasure_id: int
    user_hash: str
    requested_by: str
    previous_erasures: int
    counts: dict[str, int]
    stream_scanned: int
    duration_seconds: float

    @property
    def removed(self) -> int:
        return sum(self.counts.values())

    @property
    def nothing_left(self) -> bool:
        """True when there was nothing of the user anywhere (e.g. a second erasure)."""
        return self.removed == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "erasureId": self.erasure_id,
            "userHash": self.user_hash,
            "requestedBy": self.requested_by,
            "previousErasures": self.previous_erasures,
            "counts": self.counts,
            "removed": self.removed,
            "nothingLeft": self.nothing_left,
            "streamScanned": self.stream_scanned,
            "durationSeconds": self.duration_seconds,
        }


@dataclass(frozen=True)
class AuditEntry:
    id: int
    user_hash: str
    requested_by: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        entry = asdict(self)
        entry["started_at"] = self.started_at.isoformat()
        entry["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return entry


def snapshot_lock_name(program: str) -> str:
    """The lock every snapshot run of `program` holds (gamify.snapshots.writer)."""
    return f"gamify.snapshot.{program}"


def _ordered(counts: dict[str, int]) -> dict[str, int]:
    known = {name: counts.get(name, 0) for name in COUNT_ORDER}
    return known | {name: value for name, value in counts.items() if name not in known}


def _acquire(connection: Connection, name: str, wait_seconds: float) -> None:
    got = connection.execute(text("SELECT GET_LOCK(:name, :wait)"), {"name": name, "wait": wait_seconds})
    connection.commit()
    if got.scalar() != 1:
        raise ErasureError(f"a snapshot run of this program held its lock {name!r} for {wait_seconds:.0f}s")


def _release(connection: Connection, name: str) -> None:
    connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
    connection.commit()


def _user_object(user: str) -> str:
    return f"users/{user}.json"  # gamify.snapshots.builder.user_key


def _engine(database_url: str) -> Engine:
    return create_engine(database_url, poolclass=NullPool, pool_pre_ping=True)


def erase_user(
    target: ErasureTarget,
    user: str,
    requested_by: str,
    *,
    progress: Progress | None = None,
    store: ObjectStore | None = None,
    lock_wait_seconds: float = LOCK_WAIT_SECONDS,
) -> ErasureReport:
    """Erase `user` from `target.program` everywhere it is kept; see the module docstring.

    `progress` is told how far the stream scan is (messages read, messages in the stream);
    `store` replaces the program's snapshot store (tests).
    """
    if not USER_ID.match(user):
        raise ErasureError(f"{user!r} is not a valid user id, so no data can exist for it")
    started = time.monotonic()
    store = store or open_store(target.snapshot_url)
    engine = _engine(target.database_url)
    lock = snapshot_lock_name(target.program)
    try:
        with engine.connect() as holder:
            _acquire(holder, lock, lock_wait_seconds)
            try:
                erased = rows.erase_rows(engine, user, requested_by)
                counts = dict(erased.counts)
                counts["snapshotObjects"] = int(store.delete(_user_object(user)))
            finally:
                _release(holder, lock)
        scanned = 0
        counts["streamMessages"] = 0
        if target.nats_url is not None:
            result = asyncio.run(erase_from_stream(target.nats_url, target.program, user, progress))
            scanned, counts["streamMessages"] = result.scanned, result.deleted
        counts = _ordered(counts)
        rows.finish(engine, erased.erasure_id, counts)
    finally:
        engine.dispose()
    report = ErasureReport(
        program=target.program,
        erasure_id=erased.erasure_id,
        user_hash=erased.user_hash,
        requested_by=requested_by,
        previous_erasures=erased.previous_erasures,
        counts=counts,
        stream_scanned=scanned,
        duration_seconds=round(time.monotonic() - started, 3),
    )
    # Never the user id: the log line is about the erasure, by its audit row.
    log.info(
        "employee erased",
        program=target.program,
        erasure_id=report.erasure_id,
        removed=report.removed,
        previous_erasures=report.previous_erasures,
        counts=counts,
    )
    return report


def audit_log(database_url: str, user: str | None = None) -> list[AuditEntry]:
    """The program's erasures, oldest first; with `user`, only that user's (to prove it)."""
    erasures = t.erasures
    engine = _engine(database_url)
    try:
        with engine.connect() as connection:
            query = select(erasures).order_by(erasures.c.id)
            if user is not None:
                salt = identity.read_salt(connection)
                if salt is None:
                    return []
                query = query.where(erasures.c.user_hash == identity.user_hash(salt, user))
            return [
                AuditEntry(
                    id=row.id,
                    user_hash=row.user_hash,
                    requested_by=row.requested_by,
                    started_at=row.started_at,
                    finished_at=row.finished_at,
                    counts=_ordered(_counts(row.counts)),
                )
                for row in connection.execute(query)
            ]
    finally:
        engine.dispose()


def _counts(value: Any) -> dict[str, int]:
    if isinstance(value, str | bytes):
        value = orjson.loads(value)
    return {str(k): int(v) for k, v in dict(value or {}).items()}
