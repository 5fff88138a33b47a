"""The load generator: POSTs event batches to one ingest URL, from its own process.

Two modes (`python -m bench.load closed|open ...`, API key in `BENCH_API_KEY`):
- closed: `--connections` clients each send their next batch as soon as the previous one is
  answered; measures how many events/s ingest accepts at most.
- open: one batch every `batch / rate` seconds on a fixed schedule, whatever the answers do
  (open loop: a slow server does not slow the sender down, so queueing shows up as latency);
  `--record FILE` gets, per request, its first event index, size, send and answer times.

Events are made and serialised before the clock starts; the loop is uvloop, as in uvicorn.
Prints one JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop

from bench.common import make_events, percentile


def _bodies(tag: str, count: int, users: int, batch: int, seed: int) -> list[tuple[int, int, bytes]]:
    """(first event index, events in it, JSON body) per request."""
    events = make_events(count, users, tag, seed)
    return [
        (start, len(chunk), orjson.dumps({"events": chunk}))
        for start in range(0, count, batch)
        if (chunk := events[start : start + batch])
    ]


def _client(url: str, api_key: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(30.0),
    )


def _count(answer: httpx.Response, statuses: Counter[int], totals: Counter[str]) -> None:
    statuses[answer.status_code] += 1
    if answer.status_code == 202:
        document = answer.json()
        totals["accepted"] += int(document.get("accepted", 0))
        totals["duplicates"] += int(document.get("duplicates", 0))
        totals["rejected"] += len(document.get("rejected", []))


async def closed_loop(
    url: str, api_key: str, bodies: list[tuple[int, int, bytes]], connections: int
) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    totals: Counter[str] = Counter()
    durations: list[float] = []
    queue = iter(bodies)
    async with _client(url, api_key, connections) as client:
        # Open the connections before the clock starts.
        await asyncio.gather(*(client.get("/healthz") for _ in range(connections)))

        async def sender() -> None:
            for _, _, body in queue:
                sent = time.perf_counter()
                answer = await client.post("/v1/events", content=body)
                durations.append(time.perf_counter() - sent)
                _count(answer, statuses, totals)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(sender() for _ in range(connections)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "mode": "closed",
        "seconds": elapsed,
        "requests": sum(statuses.values()),
        "statuses": {str(code): n for code, n in statuses.items()},
        **totals,
        "accepted_per_second": totals["accepted"] / elapsed,
        "cpu_seconds": cpu,
        "request_p50_ms": percentile(durations, 50) * 1000,
        "request_p99_ms": percentile(durations, 99) * 1000,
    }


async def open_loop(
    url: str, api_key: str, bodies: list[tuple[int, int, bytes]], interval: float, record: Path | None
) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    totals: Counter[str] = Counter()
    rows: list[tuple[int, int, float, float, int]] = []
    late = 0
    async with _client(url, api_key, 512) as client:
        await asyncio.gather(*(client.get("/healthz") for _ in range(8)))

        async def send(first: int, size: int, body: bytes) -> None:
            sent = time.time()
            try:
                answer = await client.post("/v1/events", content=body)
            except httpx.HTTPError:
                statuses[0] += 1
                return
            answered = time.time()
            _count(answer, statuses, totals)
            rows.append((first, size, sent, answered, answer.status_code))

        tasks = []
        started = time.perf_counter()
        for index, (first, size, body) in enumerate(bodies):
            due = started + index * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                late += 1  # the sender itself fell behind its schedule
            tasks.append(asyncio.create_task(send(first, size, body)))
        offered_seconds = time.perf_counter() - started
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    if record is not None:
        record.write_bytes(orjson.dumps(rows))
    answer_ms = [(answered - sent) * 1000 for _, _, sent, answered, _ in rows]
    events = sum(size for _, size, _ in bodies)
    return {
        "mode": "open",
        "seconds": elapsed,
        "offered_seconds": offered_seconds,
        "offered_per_second": events / offered_seconds if offered_seconds else 0.0,
        "requests": sum(statuses.values()),
        "late_sends": late,
        "statuses": {str(code): n for code, n in statuses.items()},
        **totals,
        "request_p50_ms": percentile(answer_ms, 50) if answer_ms else None,
        "request_p99_ms": percentile(answer_ms, 99) if answer_ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["closed", "open"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--tag", required=True, help="event ids are <tag>-<n>: unique per run")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--connections", type=int, default=8, help="closed mode")
    parser.add_argument("--rate", type=float, default=2000.0, help="open mode: events per second")
    parser.add_argument("--record", type=Path, help="open mode: per-request times (JSON)")
    args = parser.parse_args(argv)
    api_key = os.environ.get("BENCH_API_KEY")
    if not api_key:
        print("BENCH_API_KEY is not set", file=sys.stderr)
        return 2
    bodies = _bodies(args.tag, args.events, args.users, args.batch, args.seed)
    if args.mode == "closed":
        summary = uvloop.run(closed_loop(args.url, api_key, bodies, args.connections))
    else:
        summary = uvloop.run(open_loop(args.url, api_key, bodies, args.batch / args.rate, args.record))
    sys.stdout.buffer.write(orjson.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
