"""The load generator of the fault scenarios: a mobile client that keeps its own books.

It posts batches at a steady rate (open loop: one batch every `batch / rate` seconds, whatever
the server does) and records, for every event id it ever sent, the final answer: accepted,
duplicate, rejected. Like a phone on a poor connection it retries a batch unchanged (same ids)
on 503/429 after the `Retry-After` the server asked for, and on connection errors and timeouts
after a short backoff, until it gets an answer or gives up. The scenarios reconcile this
record, not the server's word, against the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx
import orjson
from bench.common import make_events

RETRY_STATUSES = frozenset({408, 429, 503})
BACKOFF_START = 0.25
BACKOFF_MAX = 2.0
RETRY_AFTER_MAX = 30.0
# Attempt.status for answers that never came.
CONNECTION_ERROR = 0
TIMEOUT = -1


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    # In a batch answered with both accepted and duplicate events: the answer gives counts
    # only, so which ids were which is unknown; either way the event is stored.
    STORED = "stored"
    REJECTED = "rejected"
    FAILED = "failed"  # an answer that retrying cannot change (a 4xx, or a 500: a bug)
    UNRESOLVED = "unresolved"  # no final answer before the client gave up

    @property
    def stored(self) -> bool:
        return self in (Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.STORED)


@dataclass(frozen=True)
class Attempt:
    """One HTTP request of a batch (the first send or a retry), in wall-clock seconds."""

    batch: int
    sent: float
    answered: float
    status: int  # HTTP status, or CONNECTION_ERROR / TIMEOUT
    retry_after: str | None = None
    accepted: int = 0
    duplicates: int = 0
    rejected: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class EventRecord:
    outcome: Outcome | None = None
    first_sent: float = 0.0
    answered: float | None = None  # when the final answer came


@dataclass(frozen=True)
class ClientSummary:
    sent: int
    accepted: int
    duplicates: int
    stored_mixed: int
    rejected: int
    failed: int
    unresolved: int
    requests: int
    retries: int
    statuses: dict[str, int]

    @property
    def stored(self) -> int:
        """Events the client holds as stored: accepted, duplicate, or one of those."""
        return self.accepted + self.duplicates + self.stored_mixed


BatchMaker = Callable[[int], list[dict[str, Any]]]


def bench_batches(tag: str, batch: int, users: int) -> BatchMaker:
    """Batch n: `batch` realistic events (bench.common.make_events), ids `<tag>-<n>-<i>`."""
    return lambda n: make_events(batch, users, f"{tag}-{n}", seed=n)


@dataclass
class LoadClient:
    url: str
    api_key: str
    make_batch: BatchMaker
    rate: float  # events per second
    batch: int  # events per request (for the schedule)
    timeout: float = 10.0
    give_up_after: float = 240.0  # per batch, from its first send
    max_batches: int | None = None
    records: dict[str, EventRecord] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    in_flight: int = 0
    waiting_retry: int = 0  # batches sleeping before a retry
    batches_sent: int = 0
    late_sends: int = 0

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            timeout=httpx.Timeout(self.timeout),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Send on schedule until `stop` is set (or `max_batches` are sent), then wait until
        every batch has its final answer (or was given up)."""
        interval = self.batch / self.rate
        tasks: set[asyncio.Task[None]] = set()
        async with self._client() as client:
            started = time.monotonic()
            number = 0
            while not stop.is_set() and (self.max_batches is None or number < self.max_batches):
                delay = started + number * interval - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        break
                elif delay < -0.25:
                    self.late_sends += 1  # this process fell behind its own schedule
                events = self.make_batch(number)
                task = asyncio.create_task(self._deliver(client, number, events))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                number += 1
                self.batches_sent = number
            if tasks:
                await asyncio.gather(*tasks)

    async def _deliver(self, client: httpx.AsyncClient, number: int, events: list[dict[str, Any]]) -> None:
        """Post one batch until it has a final answer; the body (and so every id) never changes."""
        body = orjson.dumps({"events": events})
        ids = [event["id"] for event in events]
        first = time.time()
        for event_id in ids:
            self.records[event_id] = EventRecord(first_sent=first)
        backoff = BACKOFF_START
        while True:
            attempt = await self._post(client, number, body)
            self.attempts.append(attempt)
            wait: float | None = None
            if attempt.status == 202:
                self._settle_accepted(ids, attempt)
                return
            if attempt.status in RETRY_STATUSES:
                wait = _retry_after(attempt.retry_after, backoff)
            elif attempt.status in (CONNECTION_ERROR, TIMEOUT):
                wait = backoff * random.uniform(0.5, 1.5)
                backoff = min(backoff * 2, BACKOFF_MAX)
            else:
                self._settle(ids, Outcome.FAILED, attempt.answered)
                return
            if time.time() + wait - first > self.give_up_after:
                self._settle(ids, Outcome.UNRESOLVED, None)
                return
            self.waiting_retry += 1
            try:
                await asyncio.sleep(wait)
            finally:
                self.waiting_retry -= 1

    async def _post(self, client: httpx.AsyncClient, number: int, body: bytes) -> Attempt:
        sent = time.time()
        self.in_flight += 1
        try:
            answer = await client.post("/v1/events", content=body)
        except httpx.TimeoutException as exc:
            return Attempt(number, sent, time.time(), TIMEOUT, error=type(exc).__name__)
        except httpx.TransportError as exc:
            return Attempt(number, sent, time.time(), CONNECTION_ERROR, error=type(exc).__name__)
        finally:
            self.in_flight -= 1
        answered = time.time()
        if answer.status_code != 202:
            return Attempt(
                number, sent, answered, answer.status_code, retry_after=answer.headers.get("retry-after")
            )
        document = answer.json()
        return Attempt(
            number,
            sent,
            answered,
            202,
            accepted=int(document.get("accepted", 0)),
            duplicates=int(document.get("duplicates", 0)),
            rejected=tuple(str(item.get("id")) for item in document.get("rejected", [])),
        )

    def _settle_accepted(self, ids: list[str], attempt: Attempt) -> None:
        rejected = set(attempt.rejected)
        if attempt.duplicates == 0:
            stored = Outcome.ACCEPTED
        elif attempt.accepted == 0:
            stored = Outcome.DUPLICATE
        else:
            stored = Outcome.STORED
        for event_id in ids:
            record = self.records[event_id]
            record.outcome = Outcome.REJECTED if event_id in rejected else stored
            record.answered = attempt.answered

    def _settle(self, ids: list[str], outcome: Outcome, answered: float | None) -> None:
        for event_id in ids:
            record = self.records[event_id]
            record.outcome = outcome
            record.answered = answered

    # -- what the client knows ------------------------------------------------------------------

    def stored_ids(self) -> set[str]:
        return {
            event_id
            for event_id, record in self.records.items()
            if record.outcome is not None and record.outcome.stored
        }

    def summary(self) -> ClientSummary:
        outcomes = Counter(record.outcome for record in self.records.values())
        statuses = Counter(str(attempt.status) for attempt in self.attempts)
        return ClientSummary(
            sent=len(self.records),
            accepted=outcomes[Outcome.ACCEPTED],
            duplicates=outcomes[Outcome.DUPLICATE],
            stored_mixed=outcomes[Outcome.STORED],
            rejected=outcomes[Outcome.REJECTED],
            failed=outcomes[Outcome.FAILED],
            unresolved=outcomes[Outcome.UNRESOLVED] + outcomes[None],
            requests=len(self.attempts),
            retries=len(self.attempts) - self.batches_sent,
            statuses=dict(sorted(statuses.items())),
        )


def _retry_after(header: str | None, fallback: float) -> float:
    """Seconds the server asked for (delta-seconds form), else `fallback`."""
    try:
        seconds = float(header) if header is not None else fallback
    except ValueError:
        seconds = fallback
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)
