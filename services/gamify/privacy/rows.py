"""The database part of an erasure: one transaction, under the user's row lock.

What happens to each table (for the one user, in the one program's schema):
- `events`: rows kept, anonymised: `user_id` becomes ERASED_USER, `properties` and `source`
  are cleared. The event id stays, so a re-sent old event is still a duplicate, and
  `stream_seq` stays, so the last scored position snapshots publish does not move back;
- `ledger`, `users` (balances), `cap_counters`, `rule_counts`, `badges`, `redemptions`,
  `board_points`: the user's rows are deleted. Boards are ranked from `board_points` (and the
  all-time board from `users`) at every snapshot, so the others' ranks close up at the next run;
- `reward_stock` is left as it is: units the user redeemed were handed out, so they are not
  returned to the catalog (`redeemed` counts units given, without saying to whom);
- `erasures`: one audit row (salted hash of the user id, who asked, when, counts).

Race with the scorer: a scoring batch locks its users' rows before reading or writing anything
of theirs (gamify.scoring.store). This transaction takes the same lock first (creating a
placeholder row when the user has none yet, so a batch cannot create it meanwhile), so a batch
either committed before (and its rows are erased here) or waits and then, with the lock held,
finds the user in `erasures` (`identity.erased_among`) and scores nothing of theirs.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from gamify.db import tables as t
from gamify.privacy import identity

# Cannot be a real user id: ingest only accepts ids that start with a letter or a digit.
ERASED_USER = "~erased"
ISOLATION = "READ COMMITTED"
LOCK_RETRIES = 5
_RETRYABLE = (1213, 1205)  # deadlock, lock wait timeout
# A placeholder's rev: the scorer never writes a negative one, and no one else ever sees it
# (it is deleted before this transaction commits).
_PLACEHOLDER_REV = -1
REQUESTED_BY_LENGTH = 128

# Tables whose rows of the user are deleted, with the name their count has in the audit log.
DELETED = (
    (t.ledger.name, "ledger"),
    (t.badges.name, "badges"),
    (t.redemptions.name, "redemptions"),
    (t.cap_counters.name, "capCounters"),
    (t.rule_counts.name, "ruleCounts"),
    (t.board_points.name, "boardPoints"),
)


@dataclass(frozen=True)
class RowsErased:
    erasure_id: int  # the audit row
    user_hash: str
    previous_erasures: int  # audit rows for this user before this one
    counts: dict[str, int]


def _execute(connection: Connection, sql: str, params: tuple[Any, ...]) -> int:
    return int(connection.exec_driver_sql(sql, params).rowcount)


def _lock_user(connection: Connection, user: str) -> bool:
    """Hold the user's row lock for the rest of the transaction; True when the user had a row."""
    users = t.users.name
    found = connection.exec_driver_sql(
        f"SELECT rev FROM {users} WHERE user_id = %s FOR UPDATE", (user,)
    ).first()
    if found is not None:
        return True
    # ON DUPLICATE KEY UPDATE locks exclusively at once, also a row a batch created meanwhile
    # (which then waits for it to commit); see gamify.scoring.store.
    connection.exec_driver_sql(
        f"INSERT INTO {users} (user_id, points, spent, rev, published_rev, updated_at) "
        f"VALUES (%s, 0, 0, %s, 0, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE user_id = user_id",
        (user, _PLACEHOLDER_REV),
    )
    rev = connection.exec_driver_sql(f"SELECT rev FROM {users} WHERE user_id = %s", (user,)).scalar()
    return rev != _PLACEHOLDER_REV


def _erase_locked(connection: Connection, user: str, requested_by: str) -> RowsErased:
    salt = identity.ensure_salt(connection)
    had_row = _lock_user(connection, user)
    counts: dict[str, int] = {}
    counts["events"] = _execute(
        connection,
        f"UPDATE {t.events.name} SET user_id = %s, properties = NULL, source = NULL WHERE user_id = %s",
        (ERASED_USER, user),
    )
    for table, name in DELETED:
        counts[name] = _execute(connection, f"DELETE FROM {table} WHERE user_id = %s", (user,))
    _execute(connection, f"DELETE FROM {t.users.name} WHERE user_id = %s", (user,))
    counts["balances"] = 1 if had_row else 0

    # The audit table last: everything of the user is already locked and gone.
    hashed = identity.user_hash(salt, user)
    previous = connection.exec_driver_sql(
        f"SELECT COUNT(*) FROM {t.erasures.name} WHERE user_hash = %s", (hashed,)
    ).scalar()
    inserted = connection.exec_driver_sql(
        f"INSERT INTO {t.erasures.name} (user_hash, requested_by, started_at, counts) "
        "VALUES (%s, %s, UTC_TIMESTAMP(6), %s)",
        (hashed, requested_by[:REQUESTED_BY_LENGTH], orjson.dumps(counts).decode()),
    )
    return RowsErased(
        erasure_id=int(inserted.lastrowid),
        user_hash=hashed,
        previous_erasures=int(previous or 0),
        counts=counts,
    )


def erase_rows(engine: Engine, user: str, requested_by: str) -> RowsErased:
    """Erase `user`'s rows in one transaction and record the audit row; retried as a whole
    when InnoDB picks it as a deadlock victim or a lock wait times out."""
    for attempt in range(1, LOCK_RETRIES + 1):
        try:
            with engine.connect() as connection:
                connection = connection.execution_options(isolation_level=ISOLATION)
                with connection.begin():
                    return _erase_locked(connection, user, requested_by)
        except OperationalError as exc:
            code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
            if code not in _RETRYABLE or attempt == LOCK_RETRIES:
                raise
            time.sleep(random.uniform(0.05, 0.2) * attempt)
    raise AssertionError("unreachable")


def finish(engine: Engine, erasure_id: int, counts: dict[str, int]) -> None:
    """Complete the audit row once the bucket and stream steps are done."""
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"UPDATE {t.erasures.name} SET counts = %s, finished_at = UTC_TIMESTAMP(6) WHERE id = %s",
            (orjson.dumps(counts).decode(), erasure_id),
        )
