"""A short soak against the real servers: the processes run, every sample is taken, every
accepted event is reconciled, and the program is gone afterwards."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError
from reliability.soak import PROCESSES, SoakConfig, render, run
from sqlalchemy import create_engine, text

from gamify.naming import ProgramNames
from gamify.settings import Servers

pytestmark = pytest.mark.slow

SHORT = SoakConfig(minutes=0.5, rate=200.0, batch=20, users=200, sample_seconds=5.0, snapshot_interval=10.0)


async def test_a_short_soak_reconciles_every_event_and_cleans_up(
    servers: Servers, nats_url: str, mysql_admin_url: str, tmp_path: Path
) -> None:
    results = await run(SHORT, servers, tmp_path)

    counts = results.reconciliation
    assert counts.sent == SHORT.events == 6000
    assert counts.accepted == counts.scored == 6000
    assert (counts.lost, counts.double_counted, counts.totals_off) == (0, 0, 0)
    assert counts.snapshots_published >= 2
    # Samples every 5 s for 30 s, each with all three processes alive and measured.
    assert 7 <= len(results.samples) <= 9
    for sample in results.samples:
        for name in PROCESSES:
            point = sample.processes[name]
            assert point is not None and point.rss_mib > 10 and point.fds >= 3
    last_ingest = results.samples[-1].processes["ingest"]
    assert last_ingest is not None and last_ingest.tcp >= 2  # its listener and its NATS connection
    windows = [sample.latency for sample in results.samples[1:]]
    assert all(window is not None and window.events > 0 for window in windows)
    assert sum(window.events for window in results.minutes) == 6000
    verdicts = {(v.subject, v.check): v.ok for v in results.verdicts}
    assert verdicts[("pipeline", "accepted events scored exactly once")]
    assert verdicts[("pipeline", "every request answered 202")]
    assert f"`{results.program}`" in render(results)

    # Everything provisioned is deleted: schema, user and stream.
    names = ProgramNames(results.program)
    engine = create_engine(mysql_admin_url)
    try:
        with engine.connect() as connection:
            schemas = connection.execute(
                text("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name"),
                {"name": names.schema},
            ).scalar_one()
    finally:
        engine.dispose()
    assert schemas == 0
    client = await nats.connect(nats_url)
    try:
        with pytest.raises(NotFoundError):
            await client.jetstream().stream_info(names.stream)
    finally:
        await client.close()
