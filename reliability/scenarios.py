"""The fault scenarios (issue 5, "Faults"): each runs a fresh program under a steady load from
reliability.client, injects its fault a configured number of times, lets everything drain,
and reconciles the client's record against the ledger.

Every scenario returns a ScenarioResult: the counts, each fault with its time to recover, and
named checks (a failed check, a lost or double-counted event, or an error fails the run).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import signal
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import progress
from nats.js.api import ConsumerInfo
from sqlalchemy import create_engine, text

from gamify.program import Program, parse_program
from reliability.client import CONNECTION_ERROR, TIMEOUT, LoadClient, bench_batches
from reliability.harness import SIGKILLED, Stage, StageConfig, describe_consumer, stage
from reliability.reconcile import Counts, LedgerState, read_ledger, reconcile, recovery
from reliability.servers import PrivateServers


@dataclass(frozen=True)
class SuiteConfig:
    worker_kills: int = 20
    nats_restarts: int = 5
    nats_down: float = 5.0  # seconds NATS stays down each time
    mariadb_stops: int = 3
    mariadb_down: float = 30.0
    ingest_kills: int = 10
    race_rounds: int = 3
    race_users: int = 20
    rate: float = 200.0  # events per second, the steady load
    batch: int = 20  # events per request
    users: int = 300
    worker_batch: int = 50
    ack_wait: float = 5.0
    pause: tuple[float, float] = (1.5, 3.5)  # seconds of plain load between two faults
    settle: float = 5.0  # seconds of load after the last fault
    drain_timeout: float = 120.0

    @classmethod
    def quick(cls) -> SuiteConfig:
        return cls(
            worker_kills=5,
            nats_restarts=2,
            nats_down=4.0,
            mariadb_stops=1,
            mariadb_down=15.0,
            ingest_kills=3,
            race_rounds=2,
            pause=(1.0, 2.5),
            settle=3.0,
        )

    def stage_config(self) -> StageConfig:
        return StageConfig(self.worker_batch, self.ack_wait, self.drain_timeout)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class FaultResult:
    index: int
    started: float  # wall clock
    ended: float
    detail: dict[str, Any]
    first_accepted: float | None = None  # seconds after `ended`
    first_scored: float | None = None
    all_scored: float | None = None


@dataclass
class ScenarioResult:
    name: str
    title: str
    done: str  # what was done, in words, with the settings used
    seconds: float = 0.0
    counts: Counts | None = None
    dead_letters: int | None = None
    faults: list[FaultResult] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    client: dict[str, Any] = field(default_factory=dict)  # the client's own summary
    lost_ids: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.counts is not None
            and self.counts.lost == 0
            and self.counts.double == 0
            and all(check.passed for check in self.checks)
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# A fault loop: given the stage and the running client, inject the faults and return them
# with the scenario's own checks.
FaultLoop = Callable[[Stage, LoadClient, SuiteConfig], Awaitable[tuple[list[FaultResult], list[Check]]]]


async def _pause(config: SuiteConfig) -> None:
    await asyncio.sleep(random.uniform(*config.pause))


async def _steady(current: Stage, client: LoadClient, config: SuiteConfig) -> float:
    """Wait until the last fault is recovered from, so that each fault's recovery is its own:
    no batch waiting on a retry and the scoring backlog under a second of load. Returns the
    seconds waited (the run goes on after `drain_timeout`; the late recovery then shows)."""
    started = time.monotonic()
    while time.monotonic() - started < config.drain_timeout:
        info = await current.consumer()
        if not client.waiting_retry and info is not None and (info.num_pending or 0) <= config.rate:
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def _next_fault(current: Stage, client: LoadClient, config: SuiteConfig) -> None:
    await _steady(current, client, config)
    await _pause(config)


async def _under_load(
    name: str,
    result: ScenarioResult,
    private: PrivateServers,
    workdir: Path,
    config: SuiteConfig,
    faults: FaultLoop,
) -> None:
    """Provision, start one worker and the load, run `faults`, drain, reconcile into `result`."""
    async with stage(name, private, workdir, config.stage_config()) as current:
        current.start_worker()
        client = LoadClient(
            current.url,
            current.target.api_key,
            bench_batches(f"{name}-{secrets.token_hex(3)}", config.batch, config.users),
            rate=config.rate,
            batch=config.batch,
        )
        stop = asyncio.Event()
        load = asyncio.create_task(client.run(stop))
        try:
            await _pause(config)
            result.faults, result.checks = await faults(current, client, config)
            await asyncio.sleep(config.settle)
        finally:
            stop.set()
            await load
        await _finish(name, result, current, [client])
        if faults is _worker_kills:
            result.checks.append(await asyncio.to_thread(in_hand_scored, current.database_url, result.faults))


async def _finish(name: str, result: ScenarioResult, current: Stage, clients: list[LoadClient]) -> None:
    """Drain, reconcile, time the recoveries, and add the checks every scenario shares."""
    stored = set().union(*(client.stored_ids() for client in clients))
    progress(name, f"load stopped; waiting for {len(stored)} stored events to be scored")
    drained = await current.wait_drained(len(stored))
    ledger: LedgerState = await asyncio.to_thread(read_ledger, current.database_url)
    result.counts, result.lost_ids = reconcile(clients, ledger)
    result.dead_letters = await current.dead_letters()
    for fault in result.faults:
        timing = recovery(fault.ended, clients, ledger)
        fault.first_accepted, fault.first_scored, fault.all_scored = (
            timing.first_accepted,
            timing.first_scored,
            timing.all_scored,
        )
    summaries = [client.summary() for client in clients]
    result.client = {
        "requests": sum(s.requests for s in summaries),
        "retries": sum(s.retries for s in summaries),
        "statuses": _merge([s.statuses for s in summaries]),
        "late_sends": sum(client.late_sends for client in clients),
    }
    server_errors = sum(n for status, n in result.client["statuses"].items() if int(status) >= 500) - (
        result.client["statuses"].get("503", 0)
    )
    dead = current.dead_workers()
    result.checks += [
        Check("everything drained", drained, f"within {current.config.drain_timeout:.0f} s"),
        Check("every event got a final answer", result.counts.unresolved == 0,
              f"{result.counts.unresolved} without one"),
        Check("no 5xx other than 503", server_errors == 0, f"{server_errors} answers"),
        Check("no dead letters", result.dead_letters == 0, f"{result.dead_letters} dead-lettered"),
        Check("no worker exited on its own", not dead, "; ".join(dead)[:2000]),
    ]  # fmt: skip
    counts = result.counts
    progress(
        name,
        f"sent {counts.sent}, accepted {counts.accepted}, scored {counts.scored}, "
        f"lost {counts.lost}, double {counts.double}",
    )


def _merge(statuses: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for one in statuses:
        for status, count in one.items():
            merged[status] = merged.get(status, 0) + count
    return dict(sorted(merged.items()))


# -- 1. SIGKILL the scoring worker mid-batch ----------------------------------------------------------


async def _worker_kills(
    current: Stage, client: LoadClient, config: SuiteConfig
) -> tuple[list[FaultResult], list[Check]]:
    faults = []
    last_kill = 0.0
    for index in range(config.worker_kills):
        await _pause(config)
        (worker,) = current.live_workers()
        # The new worker must be scoring, and the batch the last kill left behind must have
        # come back (after the ack wait), so that what is in hand now is this worker's batch.
        await _wait_until(worker.events_scored, timeout=30)
        await asyncio.sleep(max(last_kill + config.ack_wait + 0.5 - time.time(), 0))
        info = await current.wait_ack_pending()
        started = last_kill = time.time()
        code = current.kill_worker(worker)
        current.start_worker()
        ended = time.time()
        # Stream positions above the ack floor, up to the last delivered: the batch in hand.
        in_hand = (info.num_ack_pending or 0) if info is not None else 0
        floor = (info.ack_floor.stream_seq or 0) if info is not None and info.ack_floor else 0
        delivered = (info.delivered.stream_seq or 0) if info is not None and info.delivered else 0
        detail = {"in_hand": in_hand, "exit": code, "in_hand_seqs": [floor, delivered]}
        faults.append(FaultResult(index, started, ended, detail))
        progress("worker", f"kill {index + 1}/{config.worker_kills}: {in_hand} messages in hand")
    return faults, _kill_checks(faults, "in_hand", "hit a batch in hand (delivered, not acked)")


def in_hand_scored(database_url: str, faults: list[FaultResult]) -> Check:
    """After the drain: every stream position a killed worker held is in the events table
    (the consumer filters event subjects only, so every position in the range is an event)."""
    engine = create_engine(database_url)
    held = missing = 0
    try:
        with engine.connect() as connection:
            for fault in faults:
                floor, delivered = fault.detail["in_hand_seqs"]
                found = connection.execute(
                    text("SELECT COUNT(*) FROM events WHERE stream_seq > :floor AND stream_seq <= :top"),
                    {"floor": floor, "top": delivered},
                ).scalar_one()
                held += delivered - floor
                missing += delivered - floor - int(found)
    finally:
        engine.dispose()
    return Check(
        "every message a killed worker held was redelivered and scored",
        missing == 0 and held > 0,
        f"{held} stream positions held at the kills, {missing} not scored",
    )


def _kill_checks(faults: list[FaultResult], counted: str, hit: str) -> list[Check]:
    """Every kill was a SIGKILL, and each found what it was aimed at (`detail[counted]` > 0)."""
    aimed = sum(1 for fault in faults if fault.detail[counted] > 0)
    return [
        Check("every kill was a SIGKILL", all(f.detail["exit"] == SIGKILLED for f in faults)),
        Check(f"every kill {hit}", aimed == len(faults), f"{aimed} of {len(faults)}"),
    ]


async def _wait_until(condition: Callable[[], object], timeout: float) -> None:
    """Wait until `condition()` is truthy."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout:g} s")
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class _Outage:
    """Wall-clock times of one server outage: stop asked, stopped, start asked, started."""

    started: float
    down: float
    back: float
    ended: float
    consumer_midway: ConsumerInfo | None = None  # the durable, half way through (if looked at)


async def _outage(
    current: Stage, server: str, seconds: float, look_midway: bool = False, signum: int = signal.SIGTERM
) -> _Outage:
    """Stop `server` (a PrivateServers component) with `signum`, keep it down `seconds`, start it
    again."""
    started = time.time()
    await asyncio.to_thread(current.private.stop, server, signum)
    down = time.time()
    middle = None
    if look_midway:
        await asyncio.sleep(seconds / 2)
        middle = await current.consumer()
    await asyncio.sleep(max(seconds - (time.time() - down), 0))
    back = time.time()
    await asyncio.to_thread(current.private.start)
    return _Outage(started, down, back, time.time(), middle)


# -- 2. restart NATS during ingest -----------------------------------------------------------------


async def _nats_restarts(
    current: Stage, client: LoadClient, config: SuiteConfig
) -> tuple[list[FaultResult], list[Check]]:
    faults = []
    outages: list[tuple[float, float]] = []
    for index in range(config.nats_restarts):
        await _next_fault(current, client, config)
        # Every second outage is a crash: SIGKILL, no chance to flush or say goodbye to clients.
        signum = signal.SIGKILL if index % 2 else signal.SIGTERM
        outage = await _outage(current, "nats", config.nats_down, signum=signum)
        down, back = outage.down, outage.back
        outages.append((down, back))
        during = [a for a in client.attempts if down <= a.answered <= back]
        faults.append(
            FaultResult(
                index,
                outage.started,
                outage.ended,
                {
                    "signal": signal.Signals(signum).name,
                    "down_seconds": round(back - down, 2),
                    "answers_while_down": len(during),
                    "503_while_down": sum(1 for a in during if a.status == 503),
                },
            )
        )
        progress(
            "nats",
            f"restart {index + 1}/{config.nats_restarts} ({signal.Signals(signum).name}): "
            f"{len(during)} answers while down",
        )
    unavailable = [a for a in client.attempts if a.status == 503]
    without_header = [a for a in unavailable if not a.retry_after]
    # Sent after NATS was gone and answered before it came back: nothing could have stored it.
    false_claims = [
        a
        for a in client.attempts
        if a.status == 202 and a.accepted and any(d <= a.sent and a.answered <= b for d, b in outages)
    ]
    answered_503 = sum(1 for fault in faults if fault.detail["503_while_down"] > 0)
    checks = [
        Check(
            "ingest answered 503 while NATS was down",
            answered_503 == len(faults),
            f"in {answered_503} of {len(faults)} outages; {len(unavailable)} answers of 503 in all",
        ),
        Check("every 503 carried Retry-After", not without_header, f"{len(without_header)} without"),
        Check(
            "no event claimed while NATS was down",
            not false_claims,
            f"{len(false_claims)} requests answered 202 with accepted events during an outage",
        ),
        Check(
            "the worker rode out the restarts",
            len(current.live_workers()) == 1,
            f"{len(current.live_workers())} workers alive",
        ),
    ]
    return faults, checks


# -- 3. stop MariaDB during scoring -----------------------------------------------------------------


async def _mariadb_stops(
    current: Stage, client: LoadClient, config: SuiteConfig
) -> tuple[list[FaultResult], list[Check]]:
    faults = []
    held: list[int] = []
    for index in range(config.mariadb_stops):
        await _next_fault(current, client, config)
        # Mid-outage: the worker holds its batch (in progress, not acked, not redelivered).
        outage = await _outage(current, "mariadb", config.mariadb_down, look_midway=True)
        middle = outage.consumer_midway
        held.append((middle.num_ack_pending or 0) if middle is not None else 0)
        faults.append(
            FaultResult(
                index,
                outage.started,
                outage.ended,
                {
                    "stop_seconds": round(outage.down - outage.started, 2),
                    "down_seconds": round(outage.back - outage.down, 2),
                    "start_seconds": round(outage.ended - outage.back, 2),
                    "consumer_mid_outage": describe_consumer(middle),
                },
            )
        )
        down_for = outage.back - outage.down
        progress("mariadb", f"stop {index + 1}/{config.mariadb_stops}: down {down_for:.0f} s")
    workers = current.live_workers()
    backed_off = any(w.log_has("database unavailable; batch kept, retrying") for w in current.workers)
    checks = [
        Check("the worker stayed up through every outage", len(workers) == 1, f"{len(workers)} alive"),
        Check("the worker backed off and kept its batch", backed_off, "log: 'database unavailable'"),
        Check(
            "a batch was held (not acked) during every outage",
            all(count > 0 for count in held),
            f"ack pending mid-outage: {held}",
        ),
    ]  # fmt: skip
    return faults, checks


# -- 4. SIGKILL ingest with requests in flight -------------------------------------------------------


async def _ingest_kills(
    current: Stage, client: LoadClient, config: SuiteConfig
) -> tuple[list[FaultResult], list[Check]]:
    faults = []
    for index in range(config.ingest_kills):
        await _next_fault(current, client, config)
        deadline = time.monotonic() + 5
        while client.in_flight == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        in_flight = client.in_flight
        started = time.time()
        code = current.kill_ingest()
        await current.start_ingest()
        ended = time.time()
        cut = [
            a
            for a in client.attempts
            if a.status in (CONNECTION_ERROR, TIMEOUT) and started - 1 <= a.answered <= ended + 1
        ]
        faults.append(
            FaultResult(
                index,
                started,
                ended,
                {"in_flight_at_kill": in_flight, "exit": code, "requests_failed": len(cut)},
            )
        )
        progress("ingest", f"kill {index + 1}/{config.ingest_kills}: {in_flight} requests in flight")
    checks = [
        *_kill_checks(faults, "in_flight_at_kill", "had requests in flight"),
        Check(
            "clients retried the cut requests",
            client.summary().retries > 0,
            f"{client.summary().retries} retries by the last kill",
        ),
    ]
    return faults, checks


# -- 5. two workers racing on caps and the last unit of stock -------------------------------------------

RACE_CAP = 30
RACE_POINTS = 10
RACE_COST = 50
RACE_WORKER_BATCH = 10


def race_program(bucket_url: str, rounds: int, now: datetime | None = None) -> Program:
    """Check-ins worth 10 with a daily cap of 30, a sign-up bonus, and one reward per round with a
    single unit of stock and a per-user limit of one."""
    now = now or datetime.now(UTC)
    start = now - timedelta(days=rounds + 2)
    return parse_program(
        {
            "apiVersion": "gamification.io/v1alpha1",
            "kind": "GamificationProgram",
            "metadata": {"name": f"rel-race-{secrets.token_hex(3)}"},
            "spec": {
                "tenant": "reliability",
                "displayName": "Reliability: racing workers",
                "schedule": {
                    "start": start.isoformat(),
                    "end": (now + timedelta(days=30)).isoformat(),
                    "timezone": "America/Sao_Paulo",
                },
                "mode": "both",
                "rules": [
                    {"id": "signup", "event": "app.signup", "points": 1000, "oncePerUser": True},
                    {"id": "checkin", "event": "app.checkin", "points": RACE_POINTS, "dailyCap": RACE_CAP},
                ],
                "rewards": [
                    {"id": f"last-unit-{n}", "name": f"Last unit {n}", "cost": RACE_COST, "stock": 1,
                     "perUserLimit": 1}
                    for n in range(rounds)
                ],
                "leaderboards": [{"id": "overall", "window": "all-time"}],
                "snapshots": {"bucket": bucket_url},
                "ingest": {"rateLimit": {"requestsPerSecond": 1_000_000, "burst": 1_000_000}},
                "retention": {"eventsMaxAge": "1d", "onDelete": "Delete"},
            },
        }
    )  # fmt: skip


def _race_day(program: Program, round_number: int) -> datetime:
    """Noon (UTC) of the program's day `round_number + 1`: one local day per round."""
    start = program.spec.schedule.start.astimezone(UTC)
    return (start + timedelta(days=round_number + 1)).replace(hour=15, minute=0, second=0, microsecond=0)


def race_events(program: Program, round_number: int, users: int, tag: str) -> list[dict[str, Any]]:
    """For every user: 12 check-ins on the round's day (4x the cap) and 2 redemptions of the
    round's reward, all interleaved so both workers get the same users in their batches."""
    day = _race_day(program, round_number)
    events = []
    for repeat in range(12):
        for user in range(users):
            occurred = day + timedelta(seconds=repeat * 60 + user)
            events.append(_event(f"{tag}-c-{repeat}-{user}", "app.checkin", user, occurred, {}))
            if repeat < 2:
                reward = f"last-unit-{round_number}"
                redeem_id = f"{tag}-r-{repeat}-{user}"
                events.append(_event(redeem_id, "reward.redeem", user, occurred, {"reward": reward}))
    return events


def _event(
    event_id: str, kind: str, user: int, occurred: datetime, properties: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": kind,
        "user": f"racer-{user}",
        "occurredAt": occurred.isoformat().replace("+00:00", "Z"),
        "properties": properties,
    }


def _race_checks(database_url: str, program: Program, rounds: int, users: int) -> list[Check]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:

            def rows(sql: str) -> list[Any]:
                return list(connection.execute(text(sql)).all())

            caps = rows(
                "SELECT user_id, local_day, SUM(points) FROM ledger WHERE rule_id = 'checkin' "
                "GROUP BY user_id, local_day"
            )
            stock = rows("SELECT reward_id, stock, redeemed FROM reward_stock ORDER BY reward_id")
            fulfilled = rows(
                "SELECT reward_id, COUNT(*) FROM redemptions WHERE status = 'fulfilled' GROUP BY reward_id"
            )
            per_user = rows(
                "SELECT COUNT(*) FROM (SELECT user_id, reward_id FROM redemptions WHERE status = 'fulfilled' "
                "GROUP BY user_id, reward_id HAVING COUNT(*) > 1) AS twice"
            )[0][0]
            spends = rows("SELECT COUNT(*) FROM ledger WHERE kind = 'spend'")[0][0]
            negative = rows("SELECT COUNT(*) FROM users WHERE points - spent < 0")[0][0]
            refused = rows(
                "SELECT COUNT(*) FROM redemptions WHERE status = 'rejected' AND COALESCE(reason, '') <> ''"
            )[0][0]
    finally:
        engine.dispose()
    exact = [points for _, _, points in caps if points == RACE_CAP]
    won = dict(fulfilled)
    return [
        Check(
            "daily caps exact: 30 points per user and day, never more",
            len(exact) == len(caps) == rounds * users,
            f"{len(exact)} of {rounds * users} (user, day) at exactly {RACE_CAP}; "
            f"max {max((p for *_, p in caps), default=0)}",
        ),
        Check(
            "stock never below 0: each last unit went exactly once",
            all(redeemed == 1 and total == 1 for _, total, redeemed in stock) and len(stock) == rounds
            and all(won.get(reward) == 1 for reward, _, _ in stock),
            f"reward_stock {[(r, s, n) for r, s, n in stock]}; fulfilled {won}",
        ),
        Check("no double redemption per user", per_user == 0, f"{per_user} users with two of one reward"),
        Check(
            "every other redemption recorded as rejected, with its reason",
            refused == rounds * users * 2 - sum(won.values()),
            f"{refused} rejected of {rounds * users * 2} redemptions",
        ),
        Check(
            "one spend per fulfilled redemption, no negative balance",
            spends == sum(won.values()) and negative == 0,
            f"{spends} spends, {sum(won.values())} fulfilled, {negative} negative balances",
        ),
    ]  # fmt: skip


async def race(result: ScenarioResult, private: PrivateServers, workdir: Path, config: SuiteConfig) -> None:
    rounds, users = config.race_rounds, config.race_users
    tag = f"race-{secrets.token_hex(3)}"
    programs: list[Program] = []

    def make(bucket_url: str) -> Program:
        programs.append(race_program(bucket_url, rounds))
        return programs[-1]

    # Small worker batches: the two workers' transactions interleave on the same users.
    race_stage = replace(config.stage_config(), worker_batch=RACE_WORKER_BATCH)
    async with stage("race", private, workdir, race_stage, make) as current:
        program = programs[0]
        first, second = current.start_worker(), current.start_worker()
        clients = []
        # Everyone signs up first (1000 points each: enough for every redemption), scored
        # before any redemption arrives, so a redemption is only ever refused for stock or limit.
        signups = [_event(f"{tag}-s-{u}", "app.signup", u, _race_day(program, 0), {}) for u in range(users)]
        clients.append(await _send_all(current, signups, config))
        if not await current.wait_drained(len(clients[0].stored_ids())):
            raise RuntimeError("the sign-ups were not scored in time")
        for round_number in range(rounds):
            events = race_events(program, round_number, users, f"{tag}-{round_number}")
            clients.append(await _send_all(current, events, config))
            progress("race", f"round {round_number + 1}/{rounds}: {len(events)} events posted")
        await _finish("race", result, current, clients)
        result.checks += await asyncio.to_thread(_race_checks, current.database_url, program, rounds, users)
        both = [first.events_scored(), second.events_scored()]
        result.checks.append(Check("both workers scored events", all(both), f"events per worker: {both}"))


async def _send_all(current: Stage, events: list[dict[str, Any]], config: SuiteConfig) -> LoadClient:
    """Post `events` in batches of 10 as fast as the schedule allows; wait for every answer."""
    size = 10
    batches = [events[start : start + size] for start in range(0, len(events), size)]
    client = LoadClient(
        current.url,
        current.target.api_key,
        lambda n: batches[n],
        rate=config.rate * 5,
        batch=size,
        max_batches=len(batches),
    )
    await client.run(asyncio.Event())
    return client


# -- the catalogue ----------------------------------------------------------------------------------

SCENARIOS = ("worker-kill", "nats-restart", "mariadb-stop", "ingest-kill", "race")


def _describe(name: str, config: SuiteConfig) -> tuple[str, str]:
    load = (
        f"steady load of {config.rate:g} events/s in batches of {config.batch} over {config.users} users; "
        f"worker batch {config.worker_batch}, consumer ack wait {config.ack_wait:g} s; each fault once "
        "the last is recovered from (no retry pending, scoring backlog under 1 s of load)"
    )
    return {
        "worker-kill": (
            "SIGKILL the scoring worker mid-batch",
            f"{config.worker_kills} times: wait until the consumer shows delivered-but-unacked messages, "
            f"SIGKILL the worker, start a new one at once. {load}.",
        ),
        "nats-restart": (
            "Restart NATS during ingest",
            f"{config.nats_restarts} times: stop nats-server (SIGTERM, and every second time SIGKILL: a "
            f"crash), keep it down {config.nats_down:g} s, start it again on the same store. Clients "
            f"retry 503s after Retry-After. {load}.",
        ),
        "mariadb-stop": (
            "Stop MariaDB during scoring",
            f"{config.mariadb_stops} times: stop mariadbd (SIGTERM), keep it down {config.mariadb_down:g} s, "
            f"start it again. Ingest keeps accepting meanwhile. {load}.",
        ),
        "ingest-kill": (
            "SIGKILL ingest with requests in flight",
            f"{config.ingest_kills} times: wait for a request in flight, SIGKILL ingest, restart it on the "
            f"same port. Clients retry cut requests with the same ids. {load}.",
        ),
        "race": (
            "Two scoring workers racing on caps and the last unit of stock",
            f"{config.race_rounds} rounds, {config.race_users} users: two workers on one durable (batch "
            f"{RACE_WORKER_BATCH}); per round each user sends 12 check-ins on one day (cap {RACE_CAP} = 3 "
            f"check-ins) and 2 redemptions of a reward with stock 1 and per-user limit 1, interleaved.",
        ),
    }[name]


_LOOPS: dict[str, FaultLoop] = {
    "worker-kill": _worker_kills,
    "nats-restart": _nats_restarts,
    "mariadb-stop": _mariadb_stops,
    "ingest-kill": _ingest_kills,
}


async def run_scenario(
    name: str, private: PrivateServers, workdir: Path, config: SuiteConfig
) -> ScenarioResult:
    """Run one scenario; an exception becomes the result's `error` (the scenario could not run)."""
    title, done = _describe(name, config)
    result = ScenarioResult(name, title, done)
    started = time.monotonic()
    progress(name, f"starting: {title}")
    try:
        if name == "race":
            await race(result, private, workdir, config)
        else:
            await _under_load(name, result, private, workdir, config, _LOOPS[name])
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        progress(name, f"COULD NOT RUN: {result.error}")
        traceback.print_exc()
    result.seconds = time.monotonic() - started
    failed = [check.name for check in result.checks if not check.passed]
    progress(
        name,
        f"{'ok' if result.ok else 'FAILED'} in {result.seconds:.0f} s"
        + (f"; failed: {failed}" if failed else ""),
    )
    return result
