"""Publish a program's snapshot: read its schema, write JSON objects under `<bucket>/<program>/`.

One run (`run_snapshot`, what the Kubernetes CronJob executes; `run_periodic` loops it for the
one-machine mode):

1. take the program's snapshot lock (`GET_LOCK`), so two runs (the CronJob and a manual
   `gamify snapshot run`) never interleave and older content never overwrites newer;
2. read everything in ONE repeatable-read transaction, so boards, users, stock and the last
   scored position describe the same instant of the database;
3. upload, concurrently, every leaderboard, the catalog, and `users/<user>.json` for users
   changed since their last publication (`users.changed`: rev > published_rev) plus users whose
   rank is wrong at the top of a board (see `builder.rank_changed_users`);
4. record what was published: `published_rev = GREATEST(published_rev, <rev read>)` (a rev the
   scorer wrote after our read stays unpublished, so that user is written again next run) and
   `published_ranks`, then a `snapshot_runs` row, whose id is the snapshot version;
5. write `manifest.json` LAST.

Consistency model for readers:
- every object is whole: GCS replaces an object atomically, `file://` renames a finished file;
- the manifest is written after every object of its run, so a reader that starts from the
  manifest only finds objects at least as new as the manifest says (never a missing or half
  one). Objects are not pinned to a version: a reader between two runs may see a board from
  run N+1 with the manifest of run N; each object carries its own `generatedAt`/`updatedAt`;
- a failed run changes nothing in the database: its objects are complete, and the users it
  did not get to are still "changed", so the next run writes them;
- a user's file is exact when written. Ranks shown within a board's `size` are kept exact on
  every run; a rank further down is refreshed when the user's own data changes (bounding the
  writes per run by changed users, not by all users).

Cache headers: boards and catalog `public, max-age=60` (the same bytes for every employee, so a
CDN can absorb launch peaks; 60 s is well below the snapshot period). User files are
`private, max-age=60`: pseudonymous, but personal (points, redemptions) under strict data
policies; each is read by one person's app, so a shared cache gains nothing and must not keep
them. The manifest is `no-cache` (revalidate every time: it is the entry point).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Integer, and_, bindparam, cast, create_engine, func, or_, select, text, true
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import ColumnElement

from gamify.db import tables
from gamify.logs import get_logger
from gamify.program import Program
from gamify.snapshots import builder
from gamify.storage import InvalidKey, ObjectStore, check_key, join_url, open_store
from gamify.windows import ALL_TIME

PUBLIC_CACHE_CONTROL = "public, max-age=60"
USER_CACHE_CONTROL = "private, max-age=60"
MANIFEST_CACHE_CONTROL = "no-cache"
UPLOAD_WORKERS = 16
LOCK_WAIT_SECONDS = 30
CHUNK = 500  # ids per IN (...) query
# Users per published-mark transaction: each holds the row locks the scorer also takes, so it
# must stay short (the soak saw scoring batches wait ~0.8 s behind 500-user marks).
MARK_CHUNK = 50
_DEADLOCK_ERRORS = (1213, 1205)  # deadlock, lock wait timeout: retry the chunk

log = get_logger(__name__)


class SnapshotError(RuntimeError):
    """A snapshot run failed; nothing was marked published."""


class SnapshotBusy(SnapshotError):
    """Another run of the same program held the snapshot lock for too long."""


@dataclass
class SnapshotReport:
    program: str
    version: int
    snapshot_url: str
    generated_at: str
    last_scored_position: int
    users_written: int
    files_written: int  # every object of the run, the manifest included
    duration_seconds: float


def snapshot_base(program: Program, default_bucket: str) -> str:
    """The bucket base URL: `spec.snapshots.bucket`, else the platform's (`GAMIFY_BUCKET`)."""
    return program.spec.snapshots.bucket or default_bucket


def snapshot_url(program: Program, bucket_url: str) -> str:
    """Where the program's objects go: `<bucket_url>/<program>/`."""
    return join_url(bucket_url, program.name)


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _UserRow:
    totals: builder.UserTotals
    rev: int
    published_ranks: dict[str, int]


@dataclass
class _State:
    last_stream_seq: int
    total_users: int
    rankings: dict[str, builder.Ranking]
    to_write: dict[str, _UserRow]
    badges: dict[str, list[builder.BadgeAward]]
    redemptions: dict[str, list[builder.Redemption]]
    stock: dict[str, builder.Stock]


def _chunks(items: Iterable[str], size: int = CHUNK) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ranks_of(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


def _user_rows(connection: Connection, condition: ColumnElement[bool]) -> dict[str, _UserRow]:
    users = tables.users
    query = select(
        users.c.user_id, users.c.points, users.c.spent, users.c.rev, users.c.published_ranks
    ).where(condition)
    return {
        row.user_id: _UserRow(
            totals=builder.UserTotals(user=row.user_id, points=int(row.points), spent=int(row.spent)),
            rev=int(row.rev),
            published_ranks=_ranks_of(row.published_ranks),
        )
        for row in connection.execute(query)
    }


def _published_within(board_id: str, size: int) -> ColumnElement[bool]:
    """SQL: the user's published rank on `board_id` is <= size (published_ranks holds ints only)."""
    rank = func.json_extract(tables.users.c.published_ranks, f'$."{board_id}"')
    return and_(rank.is_not(None), cast(func.json_unquote(rank), Integer) <= size)


def _read_rankings(connection: Connection, windows: dict[str, str]) -> dict[str, builder.Ranking]:
    points, users = tables.board_points, tables.users
    by_key: dict[str, builder.Ranking] = {}
    for key in sorted(set(windows.values())):
        if key == ALL_TIME:  # every point earned: the users' own totals (see gamify.windows)
            query = select(users.c.user_id, users.c.points).where(users.c.points > 0)
        else:
            query = select(points.c.user_id, points.c.points).where(
                points.c.window_key == key, points.c.points > 0
            )
        by_key[key] = builder.rank((row[0], int(row[1])) for row in connection.execute(query))
    return {board_id: by_key[key] for board_id, key in windows.items()}


def _read_state(connection: Connection, program: Program, windows: dict[str, str]) -> _State:
    spec = program.spec
    users = tables.users
    last_seq = connection.execute(select(func.coalesce(func.max(tables.events.c.stream_seq), 0))).scalar()
    total_users = connection.execute(select(func.count()).select_from(users)).scalar()
    rankings = _read_rankings(connection, windows)
    sizes = {board.id: board.size for board in builder.boards_of(spec)}

    changed = _user_rows(connection, users.c.changed == true())  # uses ix_users_changed
    # Users whose rank at the top of a board may be wrong: ranked within the size now ...
    candidates: dict[str, _UserRow] = {}
    top_now = sorted({u for b, r in rankings.items() for u in r.ranked_within(sizes[b])} - changed.keys())
    for batch in _chunks(top_now):
        candidates.update(_user_rows(connection, users.c.user_id.in_(batch)))
    # ... or published within it before (they may have dropped out).
    if sizes:
        candidates.update(_user_rows(connection, or_(*(_published_within(b, s) for b, s in sizes.items()))))
    candidates.update(changed)
    published = {user: row.published_ranks for user, row in candidates.items()}
    rank_changed = builder.rank_changed_users(rankings, sizes, published)
    to_write = {u: candidates[u] for u in sorted(changed.keys() | (rank_changed & candidates.keys()))}

    badges: dict[str, list[builder.BadgeAward]] = {user: [] for user in to_write}
    redemptions: dict[str, list[builder.Redemption]] = {user: [] for user in to_write}
    for batch in _chunks(to_write):
        awarded = tables.badges
        for row in connection.execute(
            select(awarded.c.user_id, awarded.c.badge_id, awarded.c.awarded_at).where(
                awarded.c.user_id.in_(batch)
            )
        ):
            badges[row.user_id].append(builder.BadgeAward(badge=row.badge_id, awarded_at=row.awarded_at))
        redeemed = tables.redemptions
        for row in connection.execute(select(redeemed).where(redeemed.c.user_id.in_(batch))):
            redemptions[row.user_id].append(
                builder.Redemption(
                    id=row.event_id,
                    reward=row.reward_id,
                    status=row.status,
                    reason=row.reason,
                    occurred_at=row.occurred_at,
                )
            )
    stock: dict[str, builder.Stock] = {}
    if builder.has_catalog(spec):
        for row in connection.execute(select(tables.reward_stock)):
            stock[row.reward_id] = builder.Stock(stock=row.stock, redeemed=int(row.redeemed))
    return _State(
        last_stream_seq=int(last_seq or 0),
        total_users=int(total_users or 0),
        rankings=rankings,
        to_write=to_write,
        badges=badges,
        redemptions=redemptions,
        stock=stock,
    )


# --- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Object:
    key: str
    data: bytes
    cache_control: str


def _upload(store: ObjectStore, objects: Sequence[_Object], workers: int) -> None:
    """Upload all objects concurrently; raise after all finished if any failed."""
    if not objects:
        return
    failures: list[tuple[str, BaseException]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(objects)))) as pool:
        futures = {
            pool.submit(store.put, obj.key, obj.data, "application/json", obj.cache_control): obj.key
            for obj in objects
        }
        for future in as_completed(futures):
            error = future.exception()
            if error is not None:
                failures.append((futures[future], error))
    if failures:
        key, first = sorted(failures, key=lambda item: item[0])[0]
        raise SnapshotError(f"{len(failures)} of {len(objects)} uploads failed; {key}: {first}") from first


def _execute_with_retry(
    connection: Connection, statement: Any, rows: list[dict[str, Any]], attempts: int = 3
) -> None:
    """Run one short transaction; retry it when it lost a deadlock against the scorer."""
    for attempt in range(1, attempts + 1):
        try:
            with connection.begin():
                connection.execute(statement, rows)
            return
        except OperationalError as exc:
            code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
            if code not in _DEADLOCK_ERRORS or attempt == attempts:
                raise
            time.sleep(0.05 * attempt)


def _mark_published(connection: Connection, written: dict[str, tuple[int, dict[str, int]]]) -> None:
    users = tables.users
    statement = (
        users.update()
        .where(users.c.user_id == bindparam("b_user"))
        # Never mark a rev newer than the one read, and never go backwards.
        .values(
            published_rev=func.greatest(users.c.published_rev, bindparam("b_rev")),
            published_ranks=bindparam("b_ranks", type_=JSON),
        )
    )
    for batch in _chunks(written, MARK_CHUNK):
        rows = [{"b_user": u, "b_rev": written[u][0], "b_ranks": written[u][1]} for u in batch]
        _execute_with_retry(connection, statement, rows)


def _lock_name(program: Program) -> str:
    return f"gamify.snapshot.{program.name}"  # <= 56 characters: MySQL allows 64


def _acquire(connection: Connection, name: str, wait_seconds: float) -> None:
    with connection.begin():
        got = connection.execute(text("SELECT GET_LOCK(:name, :wait)"), {"name": name, "wait": wait_seconds})
        if got.scalar() != 1:
            raise SnapshotBusy(f"another snapshot of this program is running (lock {name!r})")


def _release(connection: Connection, name: str) -> None:
    try:
        with connection.begin():
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
    except Exception:  # the lock dies with the connection anyway
        log.warning("could not release the snapshot lock", lock=name)


def _data_objects(
    program: Program, state: _State, generated_at: datetime
) -> tuple[list[_Object], dict[str, tuple[int, dict[str, int]]]]:
    """Every object of the run but the manifest, and per written user (rev read, ranks written)."""
    spec = program.spec
    objects = [
        _Object(
            builder.leaderboard_key(board.id),
            builder.encode(builder.leaderboard_document(board, state.rankings[board.id], generated_at)),
            PUBLIC_CACHE_CONTROL,
        )
        for board in builder.boards_of(spec)
    ]
    if builder.has_catalog(spec):
        catalog = builder.catalog_document(spec.rewards, state.stock)
        objects.append(_Object(builder.CATALOG_KEY, builder.encode(catalog), PUBLIC_CACHE_CONTROL))
    written: dict[str, tuple[int, dict[str, int]]] = {}
    for user, row in state.to_write.items():
        try:
            check_key(builder.user_key(user))
        except InvalidKey:
            # Ingest never accepts such an id; one bad row must not block every snapshot.
            log.error("user id cannot be an object key; skipped", program=program.name, user=user)
            continue
        ranks = builder.user_ranks(user, state.rankings)
        document = builder.user_document(
            row.totals, ranks, state.badges[user], state.redemptions[user], generated_at
        )
        objects.append(_Object(builder.user_key(user), builder.encode(document), USER_CACHE_CONTROL))
        written[user] = (row.rev, builder.published_form(ranks))
    return objects, written


def _record_run(connection: Connection, generated_at: datetime, state: _State, users: int, files: int) -> int:
    """Insert the `snapshot_runs` row; its id is the snapshot version."""
    with connection.begin():
        inserted = connection.execute(
            tables.snapshot_runs.insert().values(
                generated_at=generated_at.astimezone(UTC).replace(tzinfo=None),
                last_stream_seq=state.last_stream_seq,
                users_written=users,
                files_written=files,
            )
        )
        key = inserted.inserted_primary_key
        if key is None:
            raise SnapshotError("the database returned no snapshot_runs version")
        return int(key[0])


def run_snapshot(
    program: Program,
    database_url: str,
    bucket_url: str,
    now: datetime | None = None,
    *,
    store: ObjectStore | None = None,
    workers: int = UPLOAD_WORKERS,
    lock_wait_seconds: float = LOCK_WAIT_SECONDS,
) -> SnapshotReport:
    """Publish one snapshot of `program` under `<bucket_url>/<program>/` (or into `store`).

    `database_url` is the program user's URL (its own schema); `now` fixes the snapshot time
    (tests); `store` replaces the bucket (tests wrap one to record writes).
    """
    started = time.monotonic()
    generated_at = (now or datetime.now(UTC)).astimezone(UTC)
    store = store or open_store(snapshot_url(program, bucket_url))
    spec = program.spec
    windows = builder.board_windows(spec, generated_at)
    engine = create_engine(database_url, poolclass=NullPool, isolation_level="REPEATABLE READ")
    lock = _lock_name(program)
    try:
        with engine.connect() as connection:
            _acquire(connection, lock, lock_wait_seconds)
            try:
                with connection.begin():
                    state = _read_state(connection, program, windows)
                objects, written = _data_objects(program, state, generated_at)
                _upload(store, objects, workers)
                _mark_published(connection, written)
                files_written = len(objects) + 1  # and the manifest
                version = _record_run(connection, generated_at, state, len(written), files_written)
            finally:
                _release(connection, lock)
    finally:
        engine.dispose()

    manifest = builder.manifest_document(
        program,
        version=version,
        generated_at=generated_at,
        last_scored_position=state.last_stream_seq,
        files=[obj.key for obj in objects],
        counts=builder.ManifestCounts(
            users=state.total_users,
            users_written=len(written),
            leaderboards=len(builder.boards_of(spec)),
            rewards=len(spec.rewards) if builder.has_catalog(spec) else 0,
        ),
        windows=windows,
    )
    # Last: a reader starting from the manifest finds every object it lists already complete.
    store.put(builder.MANIFEST_KEY, builder.encode(manifest), cache_control=MANIFEST_CACHE_CONTROL)

    report = SnapshotReport(
        program=program.name,
        version=version,
        snapshot_url=store.base_url,
        generated_at=builder.rfc3339(generated_at),
        last_scored_position=state.last_stream_seq,
        users_written=len(written),
        files_written=files_written,
        duration_seconds=round(time.monotonic() - started, 3),
    )
    log.info(
        "snapshot published",
        program=program.name,
        version=version,
        users_written=report.users_written,
        files_written=report.files_written,
        last_scored_position=report.last_scored_position,
        duration_seconds=report.duration_seconds,
    )
    return report


def run_periodic(
    program: Program | Callable[[], Program],
    database_url: str,
    default_bucket: str,
    interval_seconds: float,
    stop: threading.Event | None = None,
) -> int:
    """Publish a snapshot every `interval_seconds` until `stop` is set; return the runs done.

    `program` may be a loader, called before each run, so an edited program file (an extended
    end date, a new board) is picked up without a restart. A failed run is logged and retried
    at the next tick: the next successful run publishes everything still unpublished.
    """
    stop = stop or threading.Event()
    runs = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            current = program if isinstance(program, Program) else program()
            run_snapshot(current, database_url, snapshot_base(current, default_bucket))
            runs += 1
        except Exception as exc:
            log.exception("snapshot failed", error=str(exc))
        stop.wait(max(0.0, interval_seconds - (time.monotonic() - started)))
    return runs
