"""The soak test's own parts: /proc sampling, latency windows, verdicts and the report."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import orjson
from reliability.soak import (
    PROCESSES,
    LatencyWindow,
    ProcessSample,
    Reconciliation,
    Sample,
    SoakConfig,
    SoakResults,
    Verdict,
    judge,
    judged_spans,
    latency_verdict,
    latency_windows,
    minute_edges,
    near_snapshot,
    not_growing,
    process_verdicts,
    render,
    sample_process,
    sparkline,
)


def _series(rss: list[float], fds: list[int] | None = None, tcp: list[int] | None = None) -> list[Sample]:
    """Samples every 10 s with the same figures for every process."""
    fds = fds or [10] * len(rss)
    tcp = tcp or [2] * len(rss)
    return [
        Sample(index * 10.0, {name: ProcessSample(rss[index], fds[index], tcp[index]) for name in PROCESSES})
        for index in range(len(rss))
    ]


def _verdict(verdicts: list[Verdict], subject: str, check: str) -> bool:
    return next(v.ok for v in verdicts if v.subject == subject and v.check == check)


# -- sampling -------------------------------------------------------------------------------------


def test_sample_process_counts_this_process_sockets_and_fds() -> None:
    before = sample_process(os.getpid())
    assert before is not None and before.rss_mib > 10
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        try:
            during = sample_process(os.getpid())
        finally:
            client.close()
            accepted.close()
    assert during is not None
    # A listener, the client end and the accepted end: three fds, three TCP sockets.
    assert during.fds - before.fds == 3
    assert during.tcp - before.tcp == 3


def test_sample_process_ignores_sockets_that_are_not_tcp() -> None:
    before = sample_process(os.getpid())
    left, right = socket.socketpair()  # Unix sockets
    try:
        during = sample_process(os.getpid())
    finally:
        left.close()
        right.close()
    assert before is not None and during is not None
    assert during.fds - before.fds == 2
    assert during.tcp == before.tcp


def test_sample_process_reports_exited_processes_as_gone() -> None:
    child = subprocess.Popen(["true"])
    try:
        status = Path(f"/proc/{child.pid}/status")
        deadline = time.monotonic() + 10
        while "\nState:\tZ" not in status.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sample_process(child.pid) is None  # exited, not yet reaped
    finally:
        child.wait()
    assert sample_process(child.pid) is None  # reaped: no /proc entry at all


# -- latency windows --------------------------------------------------------------------------------


def test_latency_windows_bucket_events_by_receipt() -> None:
    origin = 1_000_000.0
    times = [(origin + 1, origin + 1.010), (origin + 5, origin + 5.030), (origin + 15, origin + 15.5)]
    times.append((origin - 2, origin - 1.9))  # before the first sample: first window
    windows = latency_windows([10.0, 20.0], times, origin)
    assert [w.events for w in windows] == [3, 1]
    assert (windows[0].start, windows[0].end, windows[1].start) == (0.0, 10.0, 10.0)
    assert round(windows[0].p99_ms or 0) == 100
    assert round(windows[1].p50_ms or 0) == 500


def test_latency_windows_leave_empty_intervals_unmeasured() -> None:
    windows = latency_windows([10.0, 20.0], [(5.0, 5.5)], origin=0.0)
    assert windows[1].events == 0 and windows[1].p99_ms is None


def test_minute_edges_end_with_the_partial_minute() -> None:
    assert minute_edges(600.2) == [60.0 * m for m in range(1, 11)]
    assert minute_edges(130.0) == [60.0, 120.0, 130.0]
    assert minute_edges(40.0) == [40.0]


# -- verdicts ---------------------------------------------------------------------------------------


def test_not_growing_allows_a_ratio_and_some_slack() -> None:
    assert not_growing([100, 100], [110, 118], 0.10, 8)[0]
    assert not not_growing([100, 100], [130, 140], 0.10, 8)[0]
    assert not_growing([10, 11], [14, 15], 0.0, 4)[0]
    assert not not_growing([10, 11], [15, 16], 0.0, 4)[0]


def test_judged_spans_skip_the_warm_up_and_halve_the_rest() -> None:
    ten_minutes = [10.0 * index for index in range(61)]
    earlier, later, warmup = judged_spans(SoakConfig(), ten_minutes)
    assert warmup == 200.0
    assert (earlier[0], earlier[-1], later[0], later[-1]) == (20, 39, 40, 60)
    # One minute: the snapshot writer's first full run is still part of the warm-up.
    earlier, later, warmup = judged_spans(SoakConfig(), [10.0 * index for index in range(7)])
    assert (earlier, later, warmup) == ([], [6], 60.0)


QUICK = SoakConfig(snapshot_interval=5.0)  # a warm-up of the first third only


def test_flat_processes_pass() -> None:
    samples = _series([60, 70, 71, 72, 71, 72, 72, 71, 72])
    verdicts = process_verdicts(QUICK, samples)
    assert len(verdicts) == 9 and all(verdict.ok and verdict.judged for verdict in verdicts)


def test_a_short_run_leaves_process_trends_unjudged() -> None:
    verdicts = process_verdicts(SoakConfig(), _series([60, 70, 71, 72, 71, 72, 72]))
    assert [(v.check, v.judged) for v in verdicts] == [("memory, fds, TCP sockets", False)] * 3


def test_a_memory_leak_fails() -> None:
    samples = _series([60 + 10 * index for index in range(9)])
    verdicts = process_verdicts(QUICK, samples)
    assert not _verdict(verdicts, "ingest", "memory flat")
    assert _verdict(verdicts, "ingest", "fds not growing")


def test_an_fd_or_connection_leak_fails() -> None:
    growing = [10 + 3 * index for index in range(9)]
    samples = _series([70] * 9, fds=growing, tcp=growing)
    verdicts = process_verdicts(QUICK, samples)
    assert not _verdict(verdicts, "scoring", "fds not growing")
    assert not _verdict(verdicts, "scoring", "TCP sockets not growing")


def test_a_process_that_died_fails() -> None:
    samples = _series([70] * 9)
    samples[-1].processes["snapshots"] = None
    verdicts = process_verdicts(QUICK, samples)
    assert not _verdict(verdicts, "snapshots", "stayed up")


def _results(p99s: list[float | None], counts: Reconciliation) -> SoakResults:
    samples = _series([70] * len(p99s))
    for sample, p99 in zip(samples, p99s, strict=True):
        sample.latency = LatencyWindow(sample.seconds - 10, sample.seconds, 100, 10.0, p99)
    results = SoakResults(SoakConfig(minutes=1.5, snapshot_interval=5.0), program="bench-soak-x")
    results.samples = samples
    results.reconciliation = counts
    results.load = {"requests": 10, "statuses": {"202": 10}, "accepted": counts.accepted}
    results.minutes = [LatencyWindow(0, 60, 500, 10.0, 40.0), LatencyWindow(60, 90, 250, 11.0, 45.0)]
    results.verdicts = judge(results)
    return results


def test_pipeline_verdicts() -> None:
    exact = Reconciliation(sent=500, accepted=500, scored=500)
    assert _results([None, 20, 30, 25, 40, 30, 20, 30, 20], exact).ok
    slow = _results([None, 20, 30, 25, 1500, 30, 20, 30, 20], exact)
    assert not slow.ok and not _verdict(slow.verdicts, "pipeline", "p99 stable")
    lost = Reconciliation(sent=500, accepted=500, scored=499, lost=1)
    assert not _verdict(_results([20] * 9, lost).verdicts, "pipeline", "accepted events scored exactly once")
    doubled = Reconciliation(sent=500, accepted=500, scored=500, double_counted=1)
    assert not _results([20] * 9, doubled).ok
    refused = Reconciliation(sent=500, accepted=450, scored=450)
    assert not _verdict(_results([20] * 9, refused).verdicts, "pipeline", "every request answered 202")


# -- the report ---------------------------------------------------------------------------------------


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5]) == "▁▁▁"
    assert sparkline([]) == ""


def test_render_has_settings_minutes_sparklines_and_verdicts() -> None:
    results = _results([None, 20, 30, 25, 40, 30, 20, 30, 20], Reconciliation(500, 500, 500))
    report = render(results)
    assert report.startswith("## Soak: 1.5 minutes at 500 events/s")
    assert "| 1:00 | 70.0 · 10 · 2 | 70.0 · 10 · 2 | 70.0 · 10 · 2 | 500 | 10 | 40 |" in report
    assert "| 1:30 |" in report
    assert "ingest     ▁▁▁▁▁▁▁▁▁  70.0 to 70.0 MiB" in report
    assert "| ingest | memory flat | pass | median 70.0 MiB at 30-50 s -> 70.0 MiB at 60-80 s |" in report
    assert "| pipeline | p99 stable | pass |" in report
    assert "Overall: **pass**" in report


def test_render_says_what_a_short_run_could_not_judge() -> None:
    results = _results([None, 20, 30], Reconciliation(500, 500, 500))
    assert "| scoring | memory, fds, TCP sockets | not judged | 20 s of samples" in render(results)


def test_results_serialise_to_json() -> None:
    results = _results([None, 20, 30], Reconciliation(500, 500, 500))
    document = orjson.loads(results.to_json())
    assert document["ok"] is True  # the pipeline passed; three samples are too few for trends
    assert document["config"]["rate"] == 500.0
    assert document["samples"][1]["processes"]["ingest"]["fds"] == 10
    judged = {v["check"]: v["judged"] for v in document["verdicts"]}
    assert judged["p99 stable"] and not judged["memory, fds, TCP sockets"]


def test_latency_spikes_are_put_next_to_snapshot_runs() -> None:
    window = LatencyWindow(230.0, 240.0, 5000, 30.0, 1100.0)
    assert near_snapshot(window, [236.0])
    assert near_snapshot(window, [226.0])  # started just before: its last phase fell inside
    assert not near_snapshot(window, [200.0, 245.0])
    samples = _series([70] * 3)
    samples[1].latency = LatencyWindow(0.0, 10.0, 100, 10.0, 20.0)
    samples[2].latency = window
    verdict = latency_verdict(SoakConfig(), samples, [236.0])
    assert not verdict.ok
    assert verdict.detail.endswith("1 above 1,000 ms (1 of them with a snapshot run)")


def test_render_marks_the_intervals_where_a_snapshot_ran() -> None:
    results = _results([None, 20, 30, 25, 40, 30, 20, 30, 20], Reconciliation(500, 500, 500))
    results.snapshot_runs = [12.0, 42.0]
    assert "snapshot    ^  ^     " in render(results)
