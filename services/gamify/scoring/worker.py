"""The scoring worker: durable pull consumer -> rules engine -> one transaction per batch -> ack.

A message is acknowledged only after the transaction that scored it has committed, so a crash
at any point means redelivery, and redelivery is harmless: the `events` table's unique id makes
a second scoring of the same event a no-op (see `store.score_batch`).

Failures are told apart:
- the database is unavailable (down, restarting, unreachable): the batch is kept and retried
  with capped exponential backoff, its messages held with in-progress acks, until the database
  is back. Nothing is blamed on the messages;
- a batch fails for another reason: its messages are retried one by one, so one bad message
  never holds back the others. A message that still fails is redelivered later (nak with a
  delay) and, once it has been delivered `max_deliver` times, published to the program's
  dead-letter subject with the reason in its headers, then terminated: never silently dropped;
- a message that is not a valid event is dead-lettered at once (retrying cannot fix it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import zlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from gamify.deadletters import (
    HEADER_DELIVERIES,
    HEADER_EVENT_ID,
    HEADER_REASON,
    HEADER_SEQUENCE,
    HEADER_SUBJECT,
    MSG_ID,
)
from gamify.events import StreamEvent
from gamify.logs import get_logger
from gamify.naming import ProgramNames
from gamify.nats_login import SCORING, NatsLogin
from gamify.program import EVENT_TYPE, REDEEM_EVENT, Program
from gamify.scoring.lanes import LaneFailure, LaneProcesses, LanesBroken
from gamify.scoring.puller import BatchPuller, stream_sequence
from gamify.scoring.store import (
    BatchResult,
    create_scoring_engine,
    describe_error,
    is_transient,
    sync_reward_stock,
)

DEFAULT_BATCH_SIZE = 500
# Transactions in flight at once, each on its own share of the users (see _consume and _split).
DEFAULT_LANES = 2
DEFAULT_MAX_DELIVER = 5
DEFAULT_RETRY_DELAY = 2.0  # seconds before a failed message is redelivered
FETCH_TIMEOUT = 1.0  # also how quickly a stop request is noticed while idle
BACKOFF_START = 0.2
BACKOFF_MAX = 5.0
DEFAULT_ACK_WAIT = 30.0
REASON_HEADER_LENGTH = 1000

EVENTS = Counter(
    "gamify_scoring_events_total",
    "Stream messages handled by the scorer, by outcome",
    ["program", "outcome"],  # scored | duplicate | erased | dead_lettered
)
BATCH_SECONDS = Histogram(
    "gamify_scoring_batch_seconds",
    "Time to score and commit one batch",
    ["program"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DB_RETRIES = Counter(
    "gamify_scoring_db_retries_total",
    "Batches retried because the database was unavailable",
    ["program"],
)

_EVENT_TYPE = re.compile(EVENT_TYPE)


class _Stopping(Exception):
    """A stop was requested while the database was unavailable: give the batch back."""


@dataclass(frozen=True)
class _Fetched:
    """One fetched batch: every message, the valid events and the invalid messages (with why)."""

    messages: list[Msg]
    parsed: list[tuple[Msg, StreamEvent]]
    invalid: list[tuple[Msg, str]]


@dataclass
class _Tally:
    """What happened to the messages of one fetched batch."""

    scored: int = 0
    duplicates: int = 0
    erased: int = 0  # events of users erased from the program (gamify.privacy): never scored
    dead_lettered: int = 0
    retry_later: int = 0

    def add(self, result: BatchResult) -> None:
        self.scored += result.scored
        self.duplicates += len(result.duplicates)
        self.erased += len(result.erased)


@dataclass
class WorkerTotals:
    """What this worker did since it started (tests and logs read it)."""

    batches: int = 0
    scored: int = 0
    duplicates: int = 0
    erased: int = 0
    dead_lettered: int = 0
    db_retries: int = 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _header_safe(text: str) -> str:
    """NATS header values are one line of text."""
    return " ".join(text.split())[:REASON_HEADER_LENGTH]


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, LaneFailure) else describe_error(exc)


def _is_transient(exc: BaseException) -> bool:
    return exc.transient if isinstance(exc, LaneFailure) else is_transient(exc)


def _raise_if_crashed(lanes: Sequence[asyncio.Task[None]]) -> None:
    """Lanes only end after their end-of-work marker: one that ended before crashed."""
    for lane in lanes:
        if lane.done():
            lane.result()  # its own error, if it has one
            raise RuntimeError(f"scoring {lane.get_name()} stopped unexpectedly")


async def _unless_crashed(waiting: Awaitable[Any], lanes: Sequence[asyncio.Task[None]]) -> None:
    """Await `waiting` (a put or a join), but raise as soon as one of `lanes` crashes."""
    future: asyncio.Future[Any] = asyncio.ensure_future(waiting)
    try:
        while not future.done():
            watched: list[asyncio.Future[Any]] = [future, *lanes]
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                _raise_if_crashed(lanes)
        future.result()
    finally:
        future.cancel()


class ScoringWorker:
    def __init__(
        self,
        program: Program,
        nats_url: str,
        database_url: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        max_deliver: int | None = None,
        retry_delay: float | None = None,
        engine: Engine | None = None,
        lanes: int | None = None,
        login: NatsLogin | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.lanes = lanes or _env_int("GAMIFY_SCORING_LANES", DEFAULT_LANES)
        if self.lanes < 1:
            raise ValueError("lanes must be at least 1")
        self.program = program
        self.names = ProgramNames(program.name)
        self.nats_url = nats_url
        # The program's scoring user (none on a server without users); replies to its own inbox.
        self.login = login or NatsLogin.for_workload(self.names, SCORING)
        self.batch_size = batch_size
        self.max_deliver = max_deliver or _env_int("GAMIFY_MAX_DELIVER", DEFAULT_MAX_DELIVER)
        self.retry_delay = (
            retry_delay if retry_delay is not None else _env_float("GAMIFY_RETRY_DELAY", DEFAULT_RETRY_DELAY)
        )
        self.database_url = database_url
        self.engine = engine or create_scoring_engine(database_url)  # this process's own reads
        self._scoring_lanes: LaneProcesses | None = None
        self.totals = WorkerTotals()
        self.log = get_logger(__name__, program=program.name)
        self._stop = asyncio.Event()
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._hold_every = BACKOFF_MAX

    @property
    def scoring_lanes(self) -> LaneProcesses:
        assert self._scoring_lanes is not None, "the worker is not running"
        return self._scoring_lanes

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "the worker is not running"
        return self._js

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Score until `stop` is set; then finish the batch in hand, ack it, and return."""
        if stop is not None:
            self._stop = stop
        try:
            await self._sync_stock()
            if self._stop.is_set():
                return
            self._scoring_lanes = LaneProcesses(self.program, self.database_url, self.lanes)
            await self.scoring_lanes.start()
            self._nc = await nats.connect(
                self.nats_url,
                name=f"gamify-scoring-{self.program.name}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                **self.login.connect_options(),
            )
            self._js = self._nc.jetstream()
            try:
                consumer = await self.js.consumer_info(self.names.stream, self.names.durable)
            except NotFoundError as exc:
                raise RuntimeError(
                    f"consumer {self.names.durable!r} of stream {self.names.stream!r} does not exist: "
                    "provision the program first"
                ) from exc
            # While the database is down, held messages are touched well within the ack wait.
            ack_wait = consumer.config.ack_wait or DEFAULT_ACK_WAIT
            self._hold_every = max(min(ack_wait / 3, BACKOFF_MAX), 0.1)
            # Pull from the provisioned durable: never create it here with another config.
            puller = BatchPuller(self._nc, self.names.stream, self.names.durable)
            await puller.start()
            self.log.info(
                "scoring started",
                stream=self.names.stream,
                consumer=self.names.durable,
                batch_size=self.batch_size,
                lanes=self.lanes,
                max_deliver=self.max_deliver,
            )
            await self._consume(puller)
            with contextlib.suppress(Exception):
                await puller.stop()
        finally:
            await self._close()

    async def _consume(self, puller: BatchPuller) -> None:
        """Fetch and score until stopped.

        Each fetched batch is split between the lanes by user (see `_split`); every lane scores
        its parts in order, on its own, while the next batch is fetched and parsed, so NATS round
        trips, Python work and MariaDB waits overlap and no lane waits for another. A lane holds
        at most one part besides the one in the database (back-pressure on fetching). A batch
        fetched when the stop comes is still scored (its messages are already ours).
        """
        queues: list[asyncio.Queue[_Fetched | None]] = [asyncio.Queue(maxsize=1) for _ in range(self.lanes)]
        lanes = [asyncio.create_task(self._lane(queue), name=f"lane-{n}") for n, queue in enumerate(queues)]
        try:
            while not self._stop.is_set():
                fetched = await self._fetch(puller)
                _raise_if_crashed(lanes)
                if not fetched.messages:
                    await self.scoring_lanes.start()  # idle: a lane process that died is noticed now
                    continue
                parts = self._split(fetched)
                if parts is None:
                    # Not split: wait until every lane is idle, then score it alone.
                    await _unless_crashed(asyncio.gather(*(queue.join() for queue in queues)), lanes)
                    await self.handle(fetched)
                    continue
                for queue, part in zip(queues, parts, strict=True):
                    if part.messages:
                        await _unless_crashed(queue.put(part), lanes)
            for queue, lane in zip(queues, lanes, strict=True):
                await _unless_crashed(queue.put(None), [lane])
            await asyncio.gather(*lanes)
        finally:
            for lane in lanes:
                if not lane.done():
                    # Only on a crash: what a lane held comes back after the ack wait.
                    lane.cancel()
                elif not lane.cancelled():
                    lane.exception()  # seen: the first crash is the one raised

    async def _lane(self, queue: asyncio.Queue[_Fetched | None]) -> None:
        while (part := await queue.get()) is not None:
            try:
                await self.handle(part)
            finally:
                queue.task_done()
        queue.task_done()

    async def _fetch(self, puller: BatchPuller) -> _Fetched:
        try:
            messages = await puller.fetch(self.batch_size, timeout=FETCH_TIMEOUT)
        except Exception as exc:  # NATS reconnecting, stream briefly unavailable...
            self.log.warning("fetch failed; retrying", error=_describe(exc))
            await self._sleep(1.0)
            return _Fetched([], [], [])
        parsed: list[tuple[Msg, StreamEvent]] = []
        invalid: list[tuple[Msg, str]] = []
        for msg in messages:
            try:
                parsed.append((msg, StreamEvent.from_bytes(msg.data)))
            except (ValidationError, ValueError) as exc:
                invalid.append((msg, f"not a valid event: {_describe(exc)}"))
        return _Fetched(list(messages), parsed, invalid)

    async def _close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            # Flush first: the acks of the last batch must reach the server before we go.
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=5)
            with contextlib.suppress(Exception):
                await self._nc.close()
        if self._scoring_lanes is not None:
            await asyncio.to_thread(self._scoring_lanes.close)
        self.engine.dispose()
        self.log.info(
            "scoring stopped",
            batches=self.totals.batches,
            scored=self.totals.scored,
            duplicates=self.totals.duplicates,
            dead_lettered=self.totals.dead_lettered,
        )

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking up early when a stop is requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _sync_stock(self) -> None:
        """Seed/refresh reward stock from the spec, waiting for the database if it is down."""
        delay = BACKOFF_START
        while True:
            try:
                await asyncio.to_thread(sync_reward_stock, self.engine, self.program.spec)
                return
            except Exception as exc:
                if not is_transient(exc) or self._stop.is_set():
                    raise
                self.log.warning("database unavailable at start; retrying", error=_describe(exc), delay=delay)
                await self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    # -- one fetched batch ----------------------------------------------------------------------

    def _split(self, fetched: _Fetched) -> list[_Fetched] | None:
        """The batch's share of each lane, or None when it must be scored whole.

        Lanes never lock the same user: a user's events always go to the same lane (a hash of
        the id), where they are scored in stream order. A batch that redeems rewards is not
        split: a reward's last units go to its redeemers in stream order, as with one lane.
        Invalid messages (dead-lettered, never scored) go to the first lane.
        """
        if any(event.type == REDEEM_EVENT for _, event in fetched.parsed):
            return None
        parts = [_Fetched([], [], []) for _ in range(self.lanes)]
        for msg, event in fetched.parsed:
            part = parts[zlib.crc32(event.user.encode()) % self.lanes]
            part.messages.append(msg)
            part.parsed.append((msg, event))
        for msg, reason in fetched.invalid:
            parts[0].messages.append(msg)
            parts[0].invalid.append((msg, reason))
        return parts

    async def handle(self, fetched: _Fetched) -> None:
        """Score one fetched batch: commit, then ack; dead-letter what cannot be scored."""
        started = time.monotonic()
        tally = _Tally()
        for msg, reason in fetched.invalid:
            if await self._dead_letter(msg, None, reason):
                tally.dead_lettered += 1
            else:
                tally.retry_later += 1
        parsed = fetched.parsed
        try:
            if parsed:
                result = await self._score(parsed)
                await self._ack_all([msg for msg, _ in parsed])
                tally.add(result)
        except LanesBroken:
            raise  # the worker stops; what it held is redelivered
        except _Stopping:
            await self._nak_all([msg for msg, _ in parsed])
            return
        except Exception as exc:
            self.log.warning(
                "batch failed; retrying its messages one by one",
                error=_describe(exc),
                batch_size=len(parsed),
            )
            for position, item in enumerate(parsed):
                try:
                    await self._score_one(item, tally)
                except _Stopping:
                    await self._nak_all([msg for msg, _ in parsed[position:]])
                    return
        duration = time.monotonic() - started
        self.totals.batches += 1
        self.totals.scored += tally.scored
        self.totals.duplicates += tally.duplicates
        self.totals.erased += tally.erased
        self.totals.dead_lettered += tally.dead_lettered
        EVENTS.labels(self.program.name, "scored").inc(tally.scored)
        EVENTS.labels(self.program.name, "duplicate").inc(tally.duplicates)
        EVENTS.labels(self.program.name, "erased").inc(tally.erased)
        BATCH_SECONDS.labels(self.program.name).observe(duration)
        self.log.info(
            "batch scored",
            batch_size=len(fetched.messages),
            scored=tally.scored,
            duplicates=tally.duplicates,
            erased=tally.erased,
            dead_lettered=tally.dead_lettered,
            retry_later=tally.retry_later,
            duration_ms=round(duration * 1000, 1),
        )

    async def _score(self, items: Sequence[tuple[Msg, StreamEvent]]) -> BatchResult:
        """Score and commit; while the database is unavailable, hold the messages and retry."""
        batch = [(event, stream_sequence(msg)) for msg, event in items]
        delay = BACKOFF_START
        while True:
            try:
                return await self.scoring_lanes.score(batch)
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                if self._stop.is_set():
                    raise _Stopping from exc
                self.totals.db_retries += 1
                DB_RETRIES.labels(self.program.name).inc()
                self.log.warning(
                    "database unavailable; batch kept, retrying",
                    error=_describe(exc),
                    delay=delay,
                    batch_size=len(items),
                )
                await self._hold([msg for msg, _ in items], delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _score_one(self, item: tuple[Msg, StreamEvent], tally: _Tally) -> None:
        """Score one message on its own: ack it once committed; otherwise give it back for a
        later delivery, or dead-letter it once it has been delivered `max_deliver` times."""
        msg, event = item
        try:
            result = await self._score([item])
        except (_Stopping, LanesBroken):
            raise
        except Exception as exc:
            reason = _describe(exc)
            deliveries = msg.metadata.num_delivered
            if deliveries >= self.max_deliver:
                reason = f"scoring failed {deliveries} times: {reason}"
                if await self._dead_letter(msg, event, reason):
                    tally.dead_lettered += 1
                    return
            else:
                self.log.warning(
                    "event failed; will be redelivered",
                    event_id=event.id,
                    error=reason,
                    deliveries=deliveries,
                    max_deliver=self.max_deliver,
                )
                with contextlib.suppress(Exception):
                    await msg.nak(delay=self.retry_delay)
            tally.retry_later += 1
            return
        await self._ack_all([msg])
        tally.add(result)

    # -- acknowledgements ---------------------------------------------------------------------------

    # Acks are plain publishes that the client buffers: a loop is far cheaper than one task
    # per message.

    async def _ack_all(self, messages: Sequence[Msg]) -> None:
        failed = 0
        for msg in messages:
            try:
                await msg.ack()
            except Exception:
                failed += 1
        if failed:
            # Not lost: the messages come back, and the database recognises them as duplicates.
            self.log.warning("acks failed; messages will be redelivered", failed=failed)

    async def _nak_all(self, messages: Sequence[Msg]) -> None:
        for msg in messages:
            with contextlib.suppress(Exception):
                await msg.nak()

    async def _hold(self, messages: Sequence[Msg], seconds: float) -> None:
        """Wait `seconds` (less if a stop is requested) while telling the server we are still
        working on `messages`, so they are not redelivered while we wait for the database."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            for msg in messages:
                with contextlib.suppress(Exception):
                    await msg.in_progress()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await self._sleep(min(left, self._hold_every))

    async def _dead_letter(self, msg: Msg, event: StreamEvent | None, reason: str) -> bool:
        """Publish `msg` to the dead-letter subject with why, then terminate it. Returns False
        (and leaves it for redelivery) if the dead letter could not be stored."""
        meta = msg.metadata
        event_type = event.type if event is not None else self._type_from_subject(msg.subject)
        event_id = event.id if event is not None else (msg.headers or {}).get(MSG_ID, "")
        headers = {
            HEADER_REASON: _header_safe(reason),
            HEADER_SUBJECT: msg.subject,
            HEADER_SEQUENCE: str(meta.sequence.stream),
            HEADER_EVENT_ID: _header_safe(event_id),
            HEADER_DELIVERIES: str(meta.num_delivered),
            # Dead-lettering the same message twice (crash before term) stores it once.
            MSG_ID: f"deadletter-{meta.sequence.stream}",
        }
        try:
            await self.js.publish(self.names.dead_letter_subject(event_type), msg.data, headers=headers)
        except Exception as exc:
            self.log.error("could not dead-letter; will retry", event_id=event_id, error=_describe(exc))
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.retry_delay)
            return False
        with contextlib.suppress(Exception):
            await msg.term()
        EVENTS.labels(self.program.name, "dead_lettered").inc()
        self.log.error(
            "event dead-lettered",
            event_id=event_id,
            reason=reason,
            subject=msg.subject,
            stream_seq=meta.sequence.stream,
            deliveries=meta.num_delivered,
        )
        return True

    def _type_from_subject(self, subject: str) -> str:
        prefix = self.names.event_subject("")
        event_type = subject[len(prefix) :] if subject.startswith(prefix) else ""
        return event_type if _EVENT_TYPE.match(event_type) else "unknown"


async def run_worker(
    program: Program,
    nats_url: str,
    database_url: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    stop: asyncio.Event | None = None,
    *,
    max_deliver: int | None = None,
    retry_delay: float | None = None,
    login: NatsLogin | None = None,
) -> WorkerTotals:
    """Run one scoring worker until `stop` is set (forever without it); returns its totals."""
    worker = ScoringWorker(
        program,
        nats_url,
        database_url,
        batch_size,
        max_deliver=max_deliver,
        retry_delay=retry_delay,
        login=login,
    )
    await worker.run(stop)
    return worker.totals
