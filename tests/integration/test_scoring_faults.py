"""Faults: the scoring worker as deployed (`python -m gamify.scoring`, a subprocess) is killed,
stopped and cut off from its database while ~3000 events flow; every event must end up scored
exactly once.

Totals are compared with the rules engine run alone over the same events. Redelivery after a
kill scores some events out of stream order, so the program avoids the only order-dependent
rules (boosted once-per-user awards, redemptions): capped per-day totals and counts are the
same in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.engine import make_url

from gamify.events import StreamEvent
from gamify.program import dump_program
from tests.integration.scoring_support import (
    Target,
    provisioned,
    publish,
    pure_totals,
    query,
    stream_event,
    wait_drained,
)

pytestmark = pytest.mark.slow

EVENTS = 3000
ACK_WAIT = 2.0  # seconds; production uses 30 s, too long to wait for after each kill here
START_TIMEOUT = 20.0

FAULT_SPEC: dict[str, Any] = {
    "schedule": {
        "start": "2027-03-01T00:00:00-03:00",
        "end": "2027-04-01T00:00:00-03:00",
        "timezone": "America/Sao_Paulo",
    },
    "rules": [
        {"id": "steps", "event": "activity.steps", "points": 10, "unit": {"property": "steps", "size": 1000},
         "dailyCap": 60},
        {"id": "login", "event": "app.login", "points": 5},
        {"id": "first-login", "event": "app.login", "points": 50, "oncePerUser": True},
        {"id": "meal", "event": "nutrition.meal", "points": 10, "dailyCap": 30,
         "conditions": [{"property": "healthy", "op": "eq", "value": True}]},
    ],
    "badges": [{"id": "hundred", "name": "Hundred", "minPoints": 100}],
    "leaderboards": [{"id": "overall", "window": "all-time"}, {"id": "today", "window": "daily"}],
}  # fmt: skip


def make_events(count: int, prefix: str, seed: int = 11) -> list[StreamEvent]:
    """`count` events over 40 users and 5 local days (around midnight in Sao Paulo too)."""
    rng = random.Random(seed)
    base = datetime(2027, 3, 10, 3, 0, tzinfo=UTC)  # midnight in Sao Paulo
    events = []
    for index in range(count):
        user = f"f-{rng.randrange(40):02d}"
        occurred = (base + timedelta(minutes=rng.randrange(-120, 5 * 24 * 60))).isoformat()
        kind = rng.random()
        event_id = f"{prefix}-{index}"
        if kind < 0.6:
            events.append(
                stream_event(event_id, "activity.steps", user, occurred, steps=rng.randrange(0, 9000))
            )
        elif kind < 0.8:
            events.append(stream_event(event_id, "app.login", user, occurred))
        else:
            events.append(
                stream_event(event_id, "nutrition.meal", user, occurred, healthy=rng.random() < 0.7)
            )
    return events


class Worker:
    """One `python -m gamify.scoring` process, its JSON log lines in a file."""

    def __init__(
        self,
        target: Target,
        program_file: Path,
        log_path: Path,
        database_url: str | None = None,
        log_level: str = "INFO",
    ):
        env = {
            **os.environ,
            "GAMIFY_PROGRAM_FILE": str(program_file),
            "GAMIFY_NATS_URL": target.nats_url,
            "GAMIFY_DATABASE_URL": database_url or target.database_url,
            "GAMIFY_SCORING_BATCH": "100",
            "GAMIFY_LOG_LEVEL": log_level,
        }
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gamify.scoring"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log_path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                out.append(orjson.loads(raw))
        return out

    def batches(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("msg") == "batch scored"]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait(10)

    def lane_processes(self) -> list[int]:
        """Pids of the worker's lane processes (its children running the spawn bootstrap)."""
        return [pid for pid in child_pids(self.process.pid) if b"spawn_main" in _cmdline(pid)]

    async def wait_lanes(self, count: int = 2, timeout: float = START_TIMEOUT) -> list[int]:
        """The lane processes, once `count` are up (a worker just started has none yet)."""
        deadline = time.monotonic() + timeout
        while len(lanes := self.lane_processes()) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return lanes

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    children.append(int(entry.name))
    return children


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


async def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    """The pids still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return alive


def write_program_file(target: Target, folder: Path) -> Path:
    """The program YAML a worker process reads (GAMIFY_PROGRAM_FILE)."""
    path = folder / "program.yaml"
    path.write_text(dump_program(target.program))
    return path


def scored_count(target: Target) -> int:
    return int(query(target.database_url, "SELECT COUNT(*) FROM events")[0][0])


async def wait_scored_at_least(
    target: Target, count: int, worker: Worker, timeout: float = START_TIMEOUT
) -> int:
    deadline = time.monotonic() + timeout
    while True:
        scored = await asyncio.to_thread(scored_count, target)
        if scored >= count:
            return scored
        if worker.process.poll() is not None:
            pytest.fail(f"worker exited ({worker.process.returncode}):\n{worker.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"only {scored} of {count} events scored after {timeout}s:\n{worker.tail()}")
        await asyncio.sleep(0.05)


def assert_exactly_once(target: Target, events: list[StreamEvent]) -> None:
    """Every event scored once; totals, counters and boards agree with the engine and the ledger."""
    url = target.database_url
    assert query(url, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events") == [(len(events), len(events))]
    doubled = query(
        url, "SELECT event_id, rule_id FROM ledger GROUP BY event_id, rule_id HAVING COUNT(*) > 1"
    )
    assert doubled == []
    expected = pure_totals(target.program, events)
    users = {user: points for user, points in query(url, "SELECT user_id, points FROM users")}
    assert users == {user: points for user, (points, _) in expected.items()}
    assert query(url, "SELECT SUM(points) FROM ledger")[0][0] == sum(p for p, _ in expected.values())
    # Derived tables agree with the ledger (the source of truth).
    boards = query(url, "SELECT user_id, window_key, points FROM board_points WHERE window_key LIKE 'd:%'")
    daily = query(
        url,
        "SELECT user_id, CONCAT('d:', local_day), SUM(points) FROM ledger WHERE kind = 'award' GROUP BY 1, 2",
    )
    assert sorted(boards) == sorted(daily)
    caps = query(url, "SELECT user_id, rule_id, local_day, points FROM cap_counters")
    capped = query(
        url,
        "SELECT user_id, rule_id, local_day, SUM(points) FROM ledger "
        "WHERE rule_id IN ('steps', 'meal') GROUP BY user_id, rule_id, local_day",
    )
    assert sorted(caps) == sorted(capped)
    assert max(points for _, rule, _, points in caps if rule == "steps") <= 60
    counts = query(url, "SELECT user_id, rule_id, awards FROM rule_counts")
    counted = query(url, "SELECT user_id, rule_id, COUNT(*) FROM ledger GROUP BY user_id, rule_id")
    assert sorted(counts) == sorted(counted)


async def dead_letters(target: Target) -> int:
    info = await target.js.stream_info(target.names.stream, subjects_filter=target.names.dead_letter_filter)
    return sum((info.state.subjects or {}).values())


async def test_sigkill_mid_stream_then_restart_scores_every_event_once(
    nats_url: str, mysql_admin_url: str, tmp_path: Path
) -> None:
    async with provisioned(FAULT_SPEC, nats_url, mysql_admin_url, ack_wait=ACK_WAIT) as target:
        program_file = write_program_file(target, tmp_path)
        events = make_events(EVENTS, "k")
        await publish(target, events)
        workers: list[Worker] = []
        try:
            # Kill it three times while it works through the backlog, each time right after
            # it committed more, with a batch certainly in flight.
            for round_number, threshold in enumerate((300, 900, 1500)):
                worker = Worker(target, program_file, tmp_path / f"worker-{round_number}.log")
                workers.append(worker)
                await wait_scored_at_least(target, threshold, worker)
                # (The threshold may have been passed before this worker started: wait for it.)
                lanes = await worker.wait_lanes()
                assert len(lanes) == 2, lanes  # GAMIFY_SCORING_LANES' default
                worker.kill()
                # Its lane processes die with it: none goes on scoring without the worker.
                assert await wait_gone(lanes) == [], lanes
            survivor = Worker(target, program_file, tmp_path / "worker-last.log")
            workers.append(survivor)
            await wait_drained(target, timeout=40)
            assert survivor.process.poll() is None, survivor.tail()
        finally:
            for worker in workers:
                worker.kill()
        assert sum(w.process.returncode == -signal.SIGKILL for w in workers[:3]) == 3
        assert_exactly_once(target, events)
        assert await dead_letters(target) == 0


async def test_a_lane_process_killed_stops_the_worker_and_nothing_is_lost(
    nats_url: str, mysql_admin_url: str, tmp_path: Path
) -> None:
    """A lane process dying (OOM killer, SIGKILL) must not turn into failed events: the worker
    stops with an error (its pod restarts) and what it held is redelivered and scored once."""
    async with provisioned(FAULT_SPEC, nats_url, mysql_admin_url, ack_wait=ACK_WAIT) as target:
        program_file = write_program_file(target, tmp_path)
        events = make_events(EVENTS, "l", seed=14)
        await publish(target, events)
        first = Worker(target, program_file, tmp_path / "first.log")
        second: Worker | None = None
        try:
            await wait_scored_at_least(target, 600, first)
            lanes = await first.wait_lanes()
            os.kill(lanes[0], signal.SIGKILL)
            assert first.wait(15) == 1, first.tail()
            assert await wait_gone(lanes) == []
            assert any(line.get("msg") == "scoring worker failed" for line in first.lines()), first.tail()
            second = Worker(target, program_file, tmp_path / "second.log")
            await wait_drained(target, timeout=40)
        finally:
            first.kill()
            if second is not None:
                second.kill()
        assert_exactly_once(target, events)
        assert await dead_letters(target) == 0


async def test_each_decision_is_logged_with_its_event_id_from_the_lanes(
    nats_url: str, mysql_admin_url: str, tmp_path: Path
) -> None:
    """At DEBUG, the lane processes log one line per event (scored or duplicate) carrying its id
    and the program: one event can be followed from ingest to the ledger."""
    async with provisioned(FAULT_SPEC, nats_url, mysql_admin_url) as target:
        program_file = write_program_file(target, tmp_path)
        events = make_events(40, "d", seed=15)
        # The first one again, as a re-send after the stream's dedupe window: a second message.
        ids = [event.id for event in events] + [f"resent-{events[0].id}"]
        await publish(target, [*events, events[0]], msg_ids=ids)
        worker = Worker(target, program_file, tmp_path / "worker.log", log_level="DEBUG")
        try:
            await wait_drained(target)
        finally:
            worker.kill()
        lines = worker.lines()
        scored = [line for line in lines if line.get("msg") == "event scored"]
        assert sorted(line["event_id"] for line in scored) == sorted(event.id for event in events)
        assert all(line["program"] == target.program.name for line in scored)
        skipped = [line["event_id"] for line in lines if line.get("msg") == "duplicate event skipped"]
        assert skipped == [events[0].id]


async def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(
    nats_url: str, mysql_admin_url: str, tmp_path: Path
) -> None:
    async with provisioned(FAULT_SPEC, nats_url, mysql_admin_url) as target:
        program_file = write_program_file(target, tmp_path)
        events = make_events(EVENTS, "t", seed=12)
        await publish(target, events)
        first = Worker(target, program_file, tmp_path / "first.log")
        second: Worker | None = None
        try:
            await wait_scored_at_least(target, 500, first)
            first.signal(signal.SIGTERM)
            assert first.wait(15) == 0, first.tail()
            scored_before = await asyncio.to_thread(scored_count, target)
            info = await target.js.consumer_info(target.names.stream, target.names.durable)
            # Everything it was given, it committed and acked: nothing comes back to be scored again.
            assert info.num_ack_pending == 0
            assert info.num_pending == len(events) - scored_before > 0
            assert sum(batch["scored"] for batch in first.batches()) == scored_before
            assert any(line.get("msg") == "scoring stopped" for line in first.lines())

            second = Worker(target, program_file, tmp_path / "second.log")
            await wait_drained(target)
        finally:
            first.kill()
            if second is not None:
                second.kill()
        assert sum(batch["duplicates"] for batch in second.batches()) == 0
        assert sum(batch["scored"] for batch in second.batches()) == len(events) - scored_before
        assert_exactly_once(target, events)


class CuttableProxy:
    """A TCP proxy to MariaDB that can drop every connection and refuse new ones for a while:
    a database outage (or restart) as the worker sees it, without touching the shared server."""

    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.up.is_set():
                client.close()  # the client sees the connection lost during the handshake
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 0.5)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)
        except OSError:
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self.sockets.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.closed.set()
        self.cut()
        self.listener.close()


async def test_database_outage_is_waited_out_without_losing_or_dead_lettering_events(
    nats_url: str, mysql_admin_url: str, tmp_path: Path
) -> None:
    async with provisioned(FAULT_SPEC, nats_url, mysql_admin_url, ack_wait=ACK_WAIT) as target:
        program_file = write_program_file(target, tmp_path)
        real = make_url(target.database_url)
        proxy = CuttableProxy(real.host or "127.0.0.1", real.port or 3306)
        through_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        events = make_events(EVENTS, "o", seed=13)
        worker = Worker(target, program_file, tmp_path / "worker.log", database_url=through_proxy)
        try:
            await publish(target, events[:1000])
            await wait_scored_at_least(target, 300, worker)
            proxy.cut()
            # Events keep arriving while the database is away (longer than the ack wait: the
            # worker must keep its batch and not let it be redelivered as failures).
            await publish(target, events[1000:])
            await asyncio.sleep(4 * ACK_WAIT)
            assert worker.process.poll() is None, worker.tail()
            proxy.restore()
            await wait_drained(target, timeout=40)
            assert worker.process.poll() is None, worker.tail()
        finally:
            worker.kill()
            proxy.close()
        lines = worker.lines()
        assert any(line.get("msg") == "database unavailable; batch kept, retrying" for line in lines)
        assert_exactly_once(target, events)
        assert await dead_letters(target) == 0
