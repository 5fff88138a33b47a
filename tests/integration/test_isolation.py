"""Two programs side by side on one machine: nothing of one ever appears in the other.

Each attempt to cross the line must fail: A's key on B's ingest, A's database user on B's
schema; and the data of one employee id used in both programs stays apart in the streams,
the schemas and the snapshot prefixes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from gamify import local
from gamify.naming import ProgramNames
from gamify.snapshots.writer import run_snapshot
from gamify.storage import open_store
from tests.conftest import unique_program_id


def document(name: str, tenant: str, points: int) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(days=2)
    return {
        "apiVersion": "gamification.io/v1alpha1",
        "kind": "GamificationProgram",
        "metadata": {"name": name},
        "spec": {
            "tenant": tenant,
            "schedule": {"start": start.isoformat(), "end": (start + timedelta(days=30)).isoformat()},
            "mode": "ranking",
            "rules": [{"id": "visit", "event": "app.visit", "points": points}],
            "leaderboards": [{"id": "overall"}],
        },
    }


@pytest.fixture
def two_programs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nats_url: str, mysql_admin_url: str, gcs_bucket: str
) -> Iterator[tuple[local.LocalState, local.LocalState]]:
    monkeypatch.setenv("GAMIFY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GAMIFY_BUCKET", f"gs://{gcs_bucket}")
    monkeypatch.setenv("GAMIFY_SNAPSHOT_INTERVAL", "3600")
    states = []
    for tenant, points in (("acme", 10), ("globex", 7)):
        path = tmp_path / f"{tenant}.yaml"
        path.write_text(yaml.safe_dump(document(unique_program_id(tenant), tenant, points)))
        states.append(local.up(path))
    try:
        yield states[0], states[1]
    finally:
        for state in states:
            local.down(state.program)


def post(state: local.LocalState, key: str, events: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(
        f"{state.ingest_url}/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def visits(prefix: str, count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC) - timedelta(minutes=1)
    return [
        {"id": f"{prefix}-{i}", "type": "app.visit", "user": "emp-1", "occurredAt": now.isoformat()}
        for i in range(count)
    ]


async def stream_subjects(nats_url: str, program: str) -> set[str]:
    names = ProgramNames(program)
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        info = await js.stream_info(names.stream)
        subjects = set()
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            subjects.add((await js.get_msg(names.stream, seq)).subject)
        return subjects
    finally:
        await connection.close()


def test_programs_never_see_each_other(
    two_programs: tuple[local.LocalState, local.LocalState], nats_url: str
) -> None:
    a, b = two_programs
    # A's key is worthless on B's ingest (and the other way round).
    assert post(b, a.api_key, visits("a", 1)).status_code == 401
    assert post(a, b.api_key, visits("b", 1)).status_code == 401

    assert post(a, a.api_key, visits("a", 3)).json()["accepted"] == 3
    assert post(b, b.api_key, visits("b", 2)).json()["accepted"] == 2
    for state in (a, b):
        local.wait_scored(state.program)

    # Streams: each holds only its own subjects.
    assert asyncio.run(stream_subjects(nats_url, a.program)) == {f"gamify.{a.program}.events.app.visit"}
    assert asyncio.run(stream_subjects(nats_url, b.program)) == {f"gamify.{b.program}.events.app.visit"}

    # Schemas: the same employee id has separate totals; each schema holds only its events.
    for state, expected_ids, points in ((a, {"a-0", "a-1", "a-2"}, 30), (b, {"b-0", "b-1"}, 14)):
        engine = create_engine(state.database_url)
        with engine.connect() as connection:
            ids = {row[0] for row in connection.execute(text("SELECT event_id FROM events"))}
            total = connection.execute(text("SELECT points FROM users WHERE user_id='emp-1'")).scalar()
        engine.dispose()
        assert ids == expected_ids
        assert total == points

    # A's database user can neither read nor write B's schema.
    engine = create_engine(a.database_url)
    other = ProgramNames(b.program).schema
    with engine.connect() as connection:
        with pytest.raises((OperationalError, ProgrammingError)) as denied:
            connection.execute(text(f"SELECT * FROM `{other}`.events"))
        assert denied.value.orig.args[0] in (1044, 1142)  # type: ignore[union-attr]
        with pytest.raises((OperationalError, ProgrammingError)):
            connection.execute(text(f"INSERT INTO `{other}`.users (user_id) VALUES ('intruder')"))
    engine.dispose()

    # Snapshots: each program writes under its own prefix only.
    for state, points in ((a, 30), (b, 14)):
        run_snapshot(local.load_program_of(state), state.database_url, state.bucket)
        doc = json.loads(open_store(state.snapshot_url).get("users/emp-1.json") or b"{}")
        assert doc["points"] == points
    root = open_store(a.bucket)
    keys = root.list("")
    assert keys, "nothing published"
    assert all(key.startswith((f"{a.program}/", f"{b.program}/")) for key in keys)
    assert {key.split("/")[0] for key in keys} == {a.program, b.program}
