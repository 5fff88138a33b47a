"""What every benchmark shares: the bench program, its events, provisioning and clean-up,
service processes, statistics and progress lines.

Each benchmark provisions its own program (unique id, dates around now) with the platform's
own provisioning code and deletes its stream, schema, user and bucket folder afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import create_engine, text

from gamify.credentials import generate_api_key, generate_password, hash_api_key
from gamify.events import StreamEvent
from gamify.naming import ProgramNames
from gamify.nats_login import INGEST, SCORING
from gamify.program import Program, dump_program, parse_program
from gamify.provisioning import ProvisionResult, deprovision, provision
from gamify.provisioning.nats_auth import ProgramNatsCredentials
from gamify.settings import Servers, without_login

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
EVENT_TYPES = ("activity.steps", "nutrition.meal", "activity.workout")

_started = time.monotonic()


def progress(section: str, message: str) -> None:
    """One line per step, with the time since the suite started: the suite runs for minutes."""
    elapsed = time.monotonic() - _started
    print(f"[{elapsed:6.1f}s] {section:<8} {message}", flush=True)


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Median, min and max of several runs (medians are what the report compares)."""

    median: float
    low: float
    high: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no runs to summarise")
        return cls(statistics.median(values), min(values), max(values), tuple(values))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted `values`."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- the machine --------------------------------------------------------------------------------


def _cpu_model() -> str:
    """The first CPU's model name and clock, from /proc/cpuinfo."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            found.setdefault(key.strip(), value.strip())
    model = found.get("model name") or platform.processor() or "unknown"
    mhz = found.get("cpu MHz")
    return f"{model}, {float(mhz):.0f} MHz" if mhz else model


def _memory() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


async def _nats_version(nats_url: str) -> str:
    import nats

    connection = await nats.connect(nats_url, connect_timeout=3)
    try:
        version = connection.connected_server_version
        return f"nats-server {version.major}.{version.minor}.{version.patch} (JetStream, file storage)"
    finally:
        await connection.close()


def _mysql_version(admin_url: str) -> str:
    """Version, and the settings that decide what a commit costs."""
    engine = create_engine(admin_url)
    try:
        with engine.connect() as connection:
            version, flush, pool, binlog = connection.execute(
                text(
                    "SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@innodb_buffer_pool_size, @@log_bin"
                )
            ).one()
    finally:
        engine.dispose()
    return (
        f"{version} (innodb_flush_log_at_trx_commit={flush}, buffer pool "
        f"{int(pool) // 1024 // 1024} MiB, binary log {'on' if binlog else 'off'})"
    )


def machine_info(servers: Servers) -> dict[str, str]:
    return {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU model": _cpu_model(),
        "Memory": _memory(),
        "OS": _os_name(),
        "Kernel": platform.release(),
        "Python": platform.python_version(),
        "NATS server": asyncio.run(_nats_version(servers.nats_url)),
        "MariaDB": _mysql_version(servers.mysql_admin_url),
    }


# -- CPU accounting ------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")
SERVER_COMMANDS = {"nats": ("nats-server",), "mariadb": ("mariadbd", "mysqld")}


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command (field 3 on), [] when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (the scoring worker's lane processes), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += parents.get(current, [])
    return tree


def cpu_seconds(pid: int, descendants: bool = True) -> float:
    """User + system CPU time a process (and its descendants) used so far (Linux /proc), 0 when
    it is gone."""
    total = 0.0
    for member in process_tree(pid) if descendants else [pid]:
        # 1-based (man 5 proc): utime 14, stime 15, and of its exited children 16, 17.
        fields = _stat(member)
        total += sum(int(value) for value in fields[11:15]) / _TICKS if fields else 0.0
    return total


def server_pids() -> dict[str, int]:
    """Pids of the NATS and MariaDB servers on this machine (read-only look in /proc), so runs
    can say how much CPU the servers used; servers elsewhere are simply not reported."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "comm").read_text().strip()
        except OSError:
            continue
        for name, commands in SERVER_COMMANDS.items():
            if command in commands:
                found.setdefault(name, int(entry.name))
    return found


class CpuMeter:
    """CPU seconds used by some processes (with their descendants; `alone`: without) between
    `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int], alone: dict[str, int] | None = None):
        self.pids = {name: (pid, True) for name, pid in pids.items()}
        self.pids.update({name: (pid, False) for name, pid in (alone or {}).items()})
        self._before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: cpu_seconds(pid, descendants) for name, (pid, descendants) in self.pids.items()}

    def start(self) -> CpuMeter:
        self._before = self._now()
        return self

    def stop(self) -> dict[str, float]:
        self.used = {name: used - self._before[name] for name, used in self._now().items()}
        return self.used


# -- the bench program and its events -----------------------------------------------------------


def bench_program(kind: str, bucket_url: str, now: datetime | None = None) -> Program:
    """A realistic program (unit rule with a daily cap, a conditional rule, a launch boost,
    badges, three boards) open from two days ago to a month from now, with a unique id.

    The per-key rate limit is lifted: these benchmarks measure capacity, not the limiter.
    """
    now = now or datetime.now(UTC)
    start = now - timedelta(days=2)
    end = now + timedelta(days=30)
    name = f"bench-{kind}-{secrets.token_hex(3)}"
    return parse_program(
        {
            "apiVersion": "gamification.io/v1alpha1",
            "kind": "GamificationProgram",
            "metadata": {"name": name},
            "spec": {
                "tenant": "bench",
                "displayName": f"Benchmark ({kind})",
                "schedule": {
                    "start": start.isoformat(),
                    "end": end.isoformat(),
                    "timezone": "America/Sao_Paulo",
                    "gracePeriod": "72h",
                },
                "mode": "ranking",
                "rules": [
                    {
                        "id": "steps",
                        "event": "activity.steps",
                        "points": 5,
                        "unit": {"property": "steps", "size": 1000},
                        "dailyCap": 60,
                    },
                    {
                        "id": "healthy-meal",
                        "event": "nutrition.meal",
                        "points": 10,
                        "conditions": [{"property": "healthy", "op": "eq", "value": True}],
                        "dailyCap": 30,
                    },
                    {
                        "id": "workout",
                        "event": "activity.workout",
                        "points": 25,
                        "conditions": [{"property": "minutes", "op": "gte", "value": 20}],
                    },
                ],
                "boosts": [
                    {
                        "name": "launch-week",
                        "start": start.isoformat(),
                        "end": (start + timedelta(days=7)).isoformat(),
                        "multiplier": 2,
                    }
                ],
                "badges": [
                    {"id": "first-100", "name": "100 club", "minPoints": 100},
                    {"id": "athlete", "name": "Athlete", "rule": "workout", "minCount": 5},
                ],
                "leaderboards": [
                    {"id": "overall", "window": "all-time"},
                    {"id": "weekly", "window": "weekly", "size": 25},
                    {"id": "today", "window": "daily", "size": 10},
                ],
                "snapshots": {"bucket": bucket_url},
                "ingest": {
                    "replicas": 1,
                    "rateLimit": {"requestsPerSecond": 1_000_000, "burst": 1_000_000},
                },
                "scoring": {"replicas": 1},
                "retention": {"eventsMaxAge": "1d", "onDelete": "Delete"},
            },
        }
    )


def make_events(count: int, users: int, tag: str, seed: int = 7) -> list[dict[str, Any]]:
    """`count` app events (the JSON apps POST) over `users` users, ids unique per `tag`.

    Mostly steps, some meals and workouts; occurredAt within the last 36 hours (inside the
    program, never in the future), so every event is accepted and most of them score.
    """
    rng = random.Random(seed)
    now = datetime.now(UTC)
    events = []
    for index in range(count):
        kind = rng.random()
        if kind < 0.7:
            event_type, properties = "activity.steps", {"steps": rng.randint(500, 12_000)}
        elif kind < 0.9:
            event_type, properties = "nutrition.meal", {"healthy": rng.random() < 0.6}
        else:
            event_type, properties = "activity.workout", {"minutes": rng.randint(5, 90)}
        occurred = now - timedelta(seconds=rng.randint(60, 36 * 3600))
        events.append(
            {
                "id": f"{tag}-{index}",
                "type": event_type,
                "user": f"u-{rng.randrange(users)}",
                "occurredAt": occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "properties": properties,
                "source": "bench",
            }
        )
    return events


def stream_payloads(events: Sequence[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    """(event id, event type, bytes) exactly as ingest publishes them (StreamEvent with receivedAt)."""
    received = datetime.now(UTC)
    out = []
    for raw in events:
        event = StreamEvent.model_validate({**raw, "receivedAt": received})
        out.append((event.id, event.type, event.to_bytes()))
    return out


def new_tag() -> str:
    return "e" + secrets.token_hex(4)


# -- provisioning -------------------------------------------------------------------------------


@dataclass
class Provisioned:
    program: Program
    result: ProvisionResult
    program_file: Path
    api_key: str
    bucket_dir: Path
    servers: Servers
    nats_credentials: ProgramNatsCredentials
    names: ProgramNames = field(init=False)

    def __post_init__(self) -> None:
        self.names = ProgramNames(self.program.name)

    def service_env(self, workload: str | None = None, port: int = 0) -> dict[str, str]:
        """The environment the operator gives the program's containers. On a NATS server with
        users, `ingest` and `scoring` sign in as the program's own users (URL without login)."""
        nats_env = {"GAMIFY_NATS_URL": self.servers.nats_url}
        if self.servers.nats_auth_dir is not None and workload in (INGEST, SCORING):
            nats_env = {
                "GAMIFY_NATS_URL": without_login(self.servers.nats_url),
                **self.nats_credentials.login(workload).environment(),
            }
        env = {
            **os.environ,
            "GAMIFY_PROGRAM_FILE": str(self.program_file),
            **nats_env,
            "GAMIFY_DATABASE_URL": self.result.database_url,
            "GAMIFY_API_KEY_HASHES": hash_api_key(self.api_key),
            "GAMIFY_BUCKET": self.bucket_dir.as_uri(),
            "PYTHONUNBUFFERED": "1",
        }
        if port:
            env["GAMIFY_INGEST_HOST"] = "127.0.0.1"
            env["GAMIFY_INGEST_PORT"] = str(port)
        return env


@contextlib.asynccontextmanager
async def provisioned(
    kind: str,
    servers: Servers,
    workdir: Path,
    make_program: Callable[[str], Program] | None = None,
) -> AsyncIterator[Provisioned]:
    """A freshly provisioned bench program; its stream, schema, user and files are deleted after.

    `make_program(bucket_url)` builds another program instead (the reliability suite's race
    needs rewards); its id must be unique, as bench_program's is."""
    bucket_dir = Path(tempfile.mkdtemp(prefix="bucket-", dir=workdir))
    program = (make_program or (lambda url: bench_program(kind, url)))(bucket_dir.as_uri())
    program_file = workdir / f"{program.name}.yaml"
    program_file.write_text(dump_program(program))
    nats_credentials = ProgramNatsCredentials.generate(program.name)
    result = await provision(program, servers, generate_password(), nats_credentials=nats_credentials)
    try:
        yield Provisioned(
            program,
            result,
            program_file,
            generate_api_key(program.name),
            bucket_dir,
            servers,
            nats_credentials,
        )
    finally:
        try:
            await deprovision(program.name, servers, bucket_dir.as_uri(), delete_data=True)
        finally:
            shutil.rmtree(bucket_dir, ignore_errors=True)
            program_file.unlink(missing_ok=True)


# -- service processes --------------------------------------------------------------------------


def count_scored(database_url: str) -> int:
    """How many events the program's schema holds as scored (rows of `events`)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT COUNT(*) FROM events")).scalar_one())
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_process(args: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A child process with its output in a file (a full pipe would stall it and skew timings)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(args),
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM (the services drain gracefully), then SIGKILL if it is still there."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_http_ready(
    url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = READY_TIMEOUT
) -> None:
    """Until `url`/readyz answers 200; an error with the log's tail if `proc` exits first or
    `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited during start-up (code {proc.returncode}):\n{tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s:\n{tail(log_path)}")


@dataclass
class IngestProcess:
    """One ingest process, started the way production starts it (`python -m gamify.ingest`)."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @classmethod
    def start(
        cls, target: Provisioned, log_path: Path, log_level: str = "INFO", port: int | None = None
    ) -> IngestProcess:
        """`port`: listen there (a restart keeps its clients' URL); default a free one."""
        port = port or free_port()
        env = {**target.service_env(INGEST, port), "GAMIFY_LOG_LEVEL": log_level}
        proc = start_process([PYTHON, "-m", "gamify.ingest"], env, log_path)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http_ready(url, proc, log_path)
        except BaseException:
            stop_process(proc)
            raise
        return cls(proc, url, log_path)

    def stop(self) -> None:
        stop_process(self.proc)


def start_worker(target: Provisioned, log_path: Path) -> subprocess.Popen[bytes]:
    """One scoring worker (`python -m gamify.scoring`), as the scoring Deployment runs it."""
    return start_process([PYTHON, "-m", "gamify.scoring"], target.service_env(SCORING), log_path)


def run_load(args: Sequence[str], api_key: str, timeout: float) -> dict[str, Any]:
    """Run the load generator (bench/load.py) in its own process; return its JSON summary.

    The key goes through the environment, never the command line (visible in `ps`)."""
    done = subprocess.run(
        [PYTHON, "-m", "bench.load", *args],
        cwd=ROOT,
        env={**os.environ, "BENCH_API_KEY": api_key},
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr.decode()[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result
