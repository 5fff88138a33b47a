"""One scenario's stage: a freshly provisioned program on the run's private servers, its ingest
and scoring workers running as the real processes (`python -m gamify.ingest`,
`python -m gamify.scoring`), and the means to kill them, wait for the backlog and read NATS.

Provisioning, the processes and their environment are bench/common.py's (the benchmarks run
the services the same way); this module adds what faults need: restarting ingest on the same
port, SIGKILL, a consumer with a short ack wait, and a NATS connection that survives restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats
import orjson
from bench.common import (
    PYTHON,
    IngestProcess,
    Provisioned,
    count_scored,
    free_port,
    provisioned,
    start_process,
    stop_process,
    tail,
)
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerInfo

from gamify.nats_login import SCORING
from gamify.program import Program
from gamify.provisioning import nats as stream_provisioning
from reliability.servers import PrivateServers

SIGKILLED = -signal.SIGKILL


@dataclass(frozen=True)
class StageConfig:
    worker_batch: int  # GAMIFY_SCORING_BATCH of each worker
    ack_wait: float  # seconds; production's 30 s is shortened so SIGKILLed batches return sooner
    drain_timeout: float


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_lines(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines (other output, e.g. a traceback, is skipped)."""
        if not self.log_path.exists():
            return []
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                line = orjson.loads(raw)
                if isinstance(line, dict):
                    lines.append(line)
        return lines

    def events_scored(self) -> int:
        """Events this worker committed, from its "batch scored" log lines."""
        return sum(
            int(line.get("scored", 0)) for line in self.log_lines() if line.get("msg") == "batch scored"
        )

    def log_has(self, message: str) -> bool:
        return self.log_path.exists() and message in self.log_path.read_text(errors="replace")


@dataclass
class Stage:
    target: Provisioned
    private: PrivateServers
    workdir: Path
    config: StageConfig
    nc: NatsClient
    ingest: IngestProcess | None = None
    ingest_port: int = field(default_factory=free_port)
    workers: list[Worker] = field(default_factory=list)
    _logs: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def database_url(self) -> str:
        return self.target.result.database_url

    def _log_path(self, kind: str) -> Path:
        self._logs += 1
        return self.workdir / f"{self.target.program.name}-{kind}-{self._logs:03d}.log"

    # -- ingest ---------------------------------------------------------------------------------

    async def start_ingest(self) -> None:
        """Start ingest on the stage's port and wait until it is ready (connected to the stream)."""
        log_path = self._log_path("ingest")
        self.ingest = await asyncio.to_thread(
            IngestProcess.start, self.target, log_path, "INFO", self.ingest_port
        )

    def kill_ingest(self) -> int:
        """SIGKILL ingest, whatever it is doing; returns its exit code."""
        assert self.ingest is not None
        self.ingest.proc.kill()
        return self.ingest.proc.wait(10)

    # -- workers ----------------------------------------------------------------------------------

    def start_worker(self) -> Worker:
        env = {**self.target.service_env(SCORING), "GAMIFY_SCORING_BATCH": str(self.config.worker_batch)}
        log_path = self._log_path("scoring")
        worker = Worker(start_process([PYTHON, "-m", "gamify.scoring"], env, log_path), log_path)
        self.workers.append(worker)
        return worker

    @staticmethod
    def kill_worker(worker: Worker) -> int:
        worker.proc.send_signal(signal.SIGKILL)
        return worker.proc.wait(10)

    def live_workers(self) -> list[Worker]:
        return [worker for worker in self.workers if worker.proc.poll() is None]

    def dead_workers(self) -> list[str]:
        """Workers that exited on their own (not killed by the scenario): each is a failure."""
        return [
            f"{w.log_path.name} exited {w.proc.returncode}:\n{tail(w.log_path, 10)}"
            for w in self.workers
            if w.proc.returncode not in (None, SIGKILLED)
        ]

    # -- NATS -----------------------------------------------------------------------------------

    async def consumer(self) -> ConsumerInfo | None:
        """The scoring consumer's state, or None while NATS cannot answer."""
        try:
            return await self.nc.jetstream(timeout=2).consumer_info(
                self.target.names.stream, self.target.names.durable
            )
        except Exception:
            return None

    async def dead_letters(self) -> int:
        js = self.nc.jetstream(timeout=5)
        info = await js.stream_info(
            self.target.names.stream, subjects_filter=self.target.names.dead_letter_filter
        )
        return sum((info.state.subjects or {}).values())

    async def wait_ack_pending(self, timeout: float = 5.0) -> ConsumerInfo | None:
        """Wait until some delivered messages are not yet acked (a batch is being scored);
        returns the consumer's state at that moment (None if it did not happen in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = await self.consumer()
            if info is not None and info.num_ack_pending:
                return info
            await asyncio.sleep(0.01)
        return None

    async def wait_drained(self, stored: int) -> bool:
        """Wait until the events table holds at least `stored` events and the consumer has
        nothing left to deliver or to be acked; False when the drain timeout passed first."""
        deadline = time.monotonic() + self.config.drain_timeout
        while time.monotonic() < deadline:
            info = await self.consumer()
            if info is not None and not info.num_pending and not info.num_ack_pending:
                with contextlib.suppress(Exception):
                    if await asyncio.to_thread(count_scored, self.database_url) >= stored:
                        return True
            await asyncio.sleep(0.5)
        return False

    async def close(self) -> None:
        for worker in self.workers:
            await asyncio.to_thread(stop_process, worker.proc)
        if self.ingest is not None:
            await asyncio.to_thread(self.ingest.stop)


async def _connect(nats_url: str) -> NatsClient:
    """A harness connection that rides out NATS restarts (quietly: restarts are the point)."""

    async def quiet(*_: object) -> None:
        return None

    return await nats.connect(
        nats_url,
        connect_timeout=3,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=quiet,
        disconnected_cb=quiet,
        reconnected_cb=quiet,
    )


async def _shorten_ack_wait(nc: NatsClient, target: Provisioned, ack_wait: float) -> None:
    """The provisioned consumer with a shorter ack wait (an updatable field; as the fault
    tests of tests/integration do), so a SIGKILLed batch is redelivered in seconds."""
    names = target.names
    config = replace(stream_provisioning.consumer_config(names), ack_wait=ack_wait)
    await nc.jetstream(timeout=5).add_consumer(names.stream, config)


@contextlib.asynccontextmanager
async def stage(
    kind: str,
    private: PrivateServers,
    workdir: Path,
    config: StageConfig,
    make_program: Callable[[str], Program] | None = None,
) -> AsyncIterator[Stage]:
    """A provisioned program with ingest running; everything stopped and deleted afterwards
    (the servers are brought back up first if a fault left one down)."""
    await asyncio.to_thread(private.start)
    async with provisioned(kind, private.servers, workdir, make_program) as target:
        nc = await _connect(private.servers.nats_url)
        current = Stage(target, private, workdir, config, nc)
        try:
            await _shorten_ack_wait(nc, target, config.ack_wait)
            await current.start_ingest()
            yield current
        finally:
            await current.close()
            await nc.close()
            await asyncio.to_thread(private.start)


def describe_consumer(info: ConsumerInfo | None) -> dict[str, Any]:
    if info is None:
        return {}
    return {
        "pending": info.num_pending,
        "ack_pending": info.num_ack_pending,
        "redelivered": info.num_redelivered,
    }
