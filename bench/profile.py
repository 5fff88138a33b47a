"""Where a service spends its time under benchmark load: py-spy samples, summarised as text.

    pip install py-spy   # anywhere on PATH, or pass --py-spy /path/to/py-spy
    .venv/bin/python -m bench.profile ingest     # one ingest process under closed-loop load
    .venv/bin/python -m bench.profile scoring    # one worker draining a pre-loaded stream

Prints, for the profiled process: the share of samples inside each function of this project
(inclusive) and the functions that were on top of the stack (self). For the worker, py-spy
samples idle time too (`--idle`), so waiting on MariaDB or NATS shows as socket reads.
Not part of `make bench`: it is the tool behind the "what limits it" notes (bench/analysis/).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import uvloop

from bench.baselines import raw_publish
from bench.common import (
    PYTHON,
    IngestProcess,
    Provisioned,
    make_events,
    new_tag,
    provisioned,
    run_load,
    start_process,
    stream_payloads,
)
from gamify.logs import configure_logging
from gamify.nats_login import SCORING
from gamify.settings import Servers

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"].split("site-packages/")[-1].split("services/")[-1]
    return f"{match['function']} ({path})"


# Ingest samples by what they were doing; the first category with a frame in the stack wins.
INGEST_CATEGORIES = (
    ("logging: JSON log lines (per event and per request)", ("logging/__init__.py", "gamify/logs.py")),
    ("publishing: nats-py publish_async and awaiting acks", ("EventPublisher.publish",)),
    ("validation: parse_event, time checks, StreamEvent", ("triage (",)),
    ("request body: read, JSON parse", ("_read_events",)),
    ("nats-py client tasks: flushing publishes, reading acks", ("nats/",)),
    ("HTTP: uvicorn, Starlette/FastAPI, middleware, response", ("uvicorn/", "starlette/", "fastapi/")),
)
_WAITING = ("readinto", "recv", "select (", "epoll", "_read_bytes", "wait (threading")


def summarise(
    raw_profile: Path,
    top: int = 25,
    only_thread: str | None = None,
    exclude: tuple[str, ...] = (),
    categories: tuple[tuple[str, tuple[str, ...]], ...] = (),
) -> str:
    """Shares of samples: by category, inclusive per project function, self per function."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    waiting = 0
    total = 0
    for line in raw_profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if (only_thread and only_thread not in stack) or any(marker in stack for marker in exclude):
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        if any(marker in frames[-1] for marker in _WAITING):
            waiting += count
        category = next(
            (name for name, markers in categories if any(m in frame for frame in frames for m in markers)),
            "other (event loop, ...)",
        )
        by_category[category] += count
        own[frames[-1]] += count
        for frame in set(frames):
            if "(gamify/" in frame:
                inclusive[frame] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples" + (f" in stacks through {only_thread}" if only_thread else "")]
    lines[0] += f" without {', '.join(exclude)}" if exclude else ""
    lines.append(f"{waiting / total:6.1%}  waiting (socket reads, select, thread waits)")
    if categories:
        lines.append("-- by activity --")
        lines += [f"{count / total:6.1%}  {name}" for name, count in by_category.most_common()]
    lines.append("-- inclusive, project functions --")
    lines += [f"{count / total:6.1%}  {frame}" for frame, count in inclusive.most_common(top)]
    lines.append("-- self (top of stack) --")
    lines += [f"{count / total:6.1%}  {frame}" for frame, count in own.most_common(top)]
    return "\n".join(lines)


def _record(py_spy: str, pid: int, seconds: float, out: Path, idle: bool) -> subprocess.Popen[bytes]:
    args = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200"]
    args += ["--format", "raw", "--output", str(out), "--nonblocking"]
    if idle:
        args.append("--idle")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def profile_ingest(py_spy: str, target: Provisioned, workdir: Path, seconds: float) -> str:
    ingest = IngestProcess.start(target, workdir / "ingest.log")
    try:
        run_load(["closed", "--url", ingest.url, "--tag", new_tag(), "--events", "3000"], target.api_key, 120)
        out = workdir / "ingest.raw"
        spy = _record(py_spy, ingest.proc.pid, seconds, out, idle=False)
        events = str(int(seconds * 15_000))  # more than one process takes in `seconds` here
        args = ["closed", "--url", ingest.url, "--tag", new_tag(), "--events", events]
        load = run_load(args, target.api_key, 600)
        spy.wait(60)
    finally:
        ingest.stop()
    head = f"ingest under load: {load['accepted_per_second']:,.0f} events/s accepted while sampled\n"
    return head + summarise(out, categories=INGEST_CATEGORIES)


async def profile_scoring(py_spy: str, target: Provisioned, workdir: Path, events: int) -> str:
    payloads = stream_payloads(make_events(events, 5000, new_tag()))
    await raw_publish(target.servers.nats_url, target.names, payloads)
    out = workdir / "scoring.raw"
    # --subprocesses: the lane processes too (their stacks start in multiprocessing's spawn_main).
    args = [py_spy, "record", "--idle", "--subprocesses", "--rate", "200", "--format", "raw"]
    args += ["--output", str(out), "--"]
    worker = start_process(
        [*args, PYTHON, "-m", "gamify.scoring"], target.service_env(SCORING), workdir / "w.log"
    )
    try:
        import nats

        connection = await nats.connect(target.servers.nats_url)
        js = connection.jetstream()
        started = time.perf_counter()
        while True:
            info = await js.consumer_info(target.names.stream, target.names.durable)
            if info.num_pending + info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - started
        await connection.close()
    finally:
        # py-spy and the worker it runs are alone in the session started for them: SIGINT to
        # that group stops the worker gracefully and makes py-spy write the profile.
        os.killpg(worker.pid, signal.SIGINT)
        worker.wait(60)
    head = f"scoring: {events:,} events drained in {elapsed:.1f}s (start-up included)\n"
    return "\n".join(
        [
            head + "== the worker's main process, main thread: event loop (fetch, parse, ack) ==",
            summarise(out, exclude=("Thread._bootstrap", "spawn_main")),
            "== the lane processes (score_batch; socket reads = waiting on MariaDB) ==",
            summarise(out, only_thread="_score_in_lane"),
        ]
    )


async def _main(what: str, py_spy: str, seconds: float, events: int, keep: bool) -> str:
    servers = Servers.from_env()
    workdir = Path(tempfile.mkdtemp(prefix="gamify-profile-"))
    try:
        async with provisioned(what, servers, workdir) as target:
            if what == "ingest":
                text = await profile_ingest(py_spy, target, workdir, seconds)
            else:
                text = await profile_scoring(py_spy, target, workdir, events)
        return text + (f"\nraw profile and logs kept in {workdir}" if keep else "")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["ingest", "scoring"])
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="the py-spy executable")
    parser.add_argument("--seconds", type=float, default=10, help="ingest: seconds sampled")
    parser.add_argument("--events", type=int, default=30_000, help="scoring: events pre-loaded")
    parser.add_argument("--keep", action="store_true", help="keep the raw py-spy profile and logs")
    args = parser.parse_args(argv)
    if not args.py_spy:
        print("py-spy not found: `pip install py-spy`, or pass --py-spy PATH", file=sys.stderr)
        return 2
    configure_logging("WARNING", service="bench")
    print(uvloop.run(_main(args.what, args.py_spy, args.seconds, args.events, args.keep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
