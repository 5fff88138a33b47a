"""The whole pipeline as a user runs it: `gamify local up`, HTTP in, snapshot JSON out.

The expected totals are computed by hand below (not by the engine), so a scoring bug fails
here. Real NATS JetStream, MariaDB and the GCS emulator; the processes are the same commands
the operator runs in its Deployments.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from gamify import local
from gamify.snapshots.writer import run_snapshot
from gamify.storage import open_store
from tests.conftest import unique_program_id
from tests.programs import program_document

ZONE = ZoneInfo("America/Sao_Paulo")  # UTC-3, no DST since 2019


def pipeline_document(name: str, start: datetime) -> dict[str, Any]:
    """Every rule kind (unit, daily cap, once per user, condition), two boosts, badges, rewards."""
    day = timedelta(days=1)
    return program_document(
        name,
        start,
        timezone="America/Sao_Paulo",
        mode="both",
        rules=[
            {"id": "steps", "event": "activity.steps", "points": 10,
             "unit": {"property": "steps", "size": 1000}, "dailyCap": 100},
            {"id": "checkin", "event": "app.checkin", "points": 5, "oncePerUser": True},
            {"id": "quiz", "event": "chatbot.quiz", "points": 20,
             "conditions": [{"property": "score", "op": "gte", "value": 80}]},
        ],
        boosts=[
            {"name": "launch", "start": start.isoformat(), "end": (start + 3 * day).isoformat(),
             "multiplier": 1.5},
            {"name": "day-two", "start": (start + day).isoformat(),
             "end": (start + 2 * day).isoformat(), "multiplier": 2},
        ],
        badges=[
            {"id": "first-100", "name": "First 100", "minPoints": 100},
            {"id": "quizzer", "name": "Quizzer", "rule": "quiz", "minCount": 2},
        ],
        rewards=[
            {"id": "mug", "name": "Mug", "cost": 50, "stock": 1, "perUserLimit": 1},
            {"id": "tshirt", "name": "T-shirt", "cost": 10},
        ],
        leaderboards=[{"id": "overall", "window": "all-time", "size": 10}],
    )  # fmt: skip


@pytest.fixture
def program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nats_url: str, mysql_admin_url: str, gcs_bucket: str
) -> Iterator[tuple[local.LocalState, datetime]]:
    monkeypatch.setenv("GAMIFY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GAMIFY_BUCKET", f"gs://{gcs_bucket}/programs")
    monkeypatch.setenv("GAMIFY_SNAPSHOT_INTERVAL", "3600")  # the test runs snapshots itself
    today = datetime.now(ZONE).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=10)
    name = unique_program_id("pipe")
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump(pipeline_document(name, start)))
    state = local.up(path)
    try:
        yield state, start
    finally:
        local.down(name)


def at(start: datetime, days: int, hour: int, minute: int = 0) -> str:
    """A local wall-clock time `days` after the start, as RFC 3339 UTC."""
    return (start + timedelta(days=days, hours=hour, minutes=minute)).astimezone(UTC).isoformat()


def ev(event_id: str, event_type: str, user: str, when: str, **properties: Any) -> dict[str, Any]:
    return {"id": event_id, "type": event_type, "user": user, "occurredAt": when,
            "properties": properties, "source": "mobile"}  # fmt: skip


def post(state: local.LocalState, body: Any, gzipped: bool = False) -> httpx.Response:
    data = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {state.api_key}", "Content-Type": "application/json"}
    if gzipped:
        data, headers["Content-Encoding"] = gzip.compress(data), "gzip"
    return httpx.post(f"{state.ingest_url}/v1/events", content=data, headers=headers, timeout=30)


def test_hand_computed_scenario_end_to_end(program: tuple[local.LocalState, datetime]) -> None:
    state, s = program
    alice = [
        ev("a1", "activity.steps", "alice", at(s, 1, 10), steps=4500),  # 40 x 1.5 x 2 = 120 → cap 100
        ev("a2", "activity.steps", "alice", at(s, 1, 11), steps=2000),  # cap reached → 0
        # 23:00 local on day 1 is 02:00 UTC on day 2: still day 1's cap in São Paulo → 0
        ev("a3", "activity.steps", "alice", at(s, 1, 23), steps=3000),
        ev("a4", "activity.steps", "alice", at(s, 5, 9), steps=5000),  # 50, no boost
        ev("a5", "app.checkin", "alice", at(s, 5, 9, 5)),  # 5
        ev("a6", "app.checkin", "alice", at(s, 6, 9)),  # once per user → 0
        ev("a7", "chatbot.quiz", "alice", at(s, 5, 12), score=90),  # 20
        ev("a8", "chatbot.quiz", "alice", at(s, 5, 13), score=50),  # condition fails → 0
        ev("a9", "chatbot.quiz", "alice", at(s, 6, 12), score=85),  # 20 → badge quizzer
    ]  # alice earned 100 + 50 + 5 + 20 + 20 = 195
    bad = [
        {"id": "x-no-user", "type": "activity.steps", "occurredAt": at(s, 2, 10)},
        ev("x-future", "activity.steps", "alice", (datetime.now(UTC) + timedelta(hours=1)).isoformat()),
        ev("x-before", "activity.steps", "alice", at(s, -1, 10), steps=1000),
    ]
    first = post(state, {"events": alice + bad})
    assert first.status_code == 202, first.text
    answer = first.json()
    assert answer["accepted"] == 9 and answer["duplicates"] == 0
    rejected = {item["id"]: item["reason"] for item in answer["rejected"]}
    assert set(rejected) == {"x-no-user", "x-future", "x-before"}
    assert "user" in rejected["x-no-user"]

    # The answer was lost on a bad connection: the app re-sends the same batch.
    again = post(state, {"events": alice})
    assert again.status_code == 202 and again.json()["accepted"] == 0
    assert again.json()["duplicates"] == 9

    others = [
        ev("a10", "reward.redeem", "alice", at(s, 7, 9), reward="mug"),  # fulfilled: 195 → 145
        ev("b1", "activity.steps", "bob", at(s, 0, 12), steps=10000),  # 100 x 1.5 = 150 → cap 100
        ev("b2", "chatbot.quiz", "bob", at(s, 7, 10), score=80),  # 20 → bob 120
        ev("b3", "reward.redeem", "bob", at(s, 8, 9), reward="mug"),  # out of stock
        ev("d1", "activity.steps", "dave", at(s, 0, 13), steps=12000),  # 120 x 1.5 → cap 100
        ev("d2", "chatbot.quiz", "dave", at(s, 7, 11), score=95),  # 20 → dave 120, tied with bob
        ev("c1", "activity.steps", "carol", at(s, 2, 8), steps=999),  # floor(0.999) = 0
        ev("c2", "app.checkin", "carol", at(s, 2, 9)),  # 5 x 1.5 = 7.5 → 7
        ev("c3", "reward.redeem", "carol", at(s, 8, 10), reward="tshirt"),  # 7 < 10: insufficient
    ]
    # Alice's redemption must be scored before Bob's: post it first.
    assert post(state, others[0]).json()["accepted"] == 1
    gz = post(state, {"events": others[1:]}, gzipped=True)
    assert gz.status_code == 202 and gz.json()["accepted"] == 8

    local.wait_scored(state.program)
    store = open_store(state.snapshot_url)
    report = run_snapshot(local.load_program_of(state), state.database_url, state.bucket)
    assert report.users_written == 4

    def read(key: str) -> dict[str, Any]:
        data = store.get(key)
        assert data is not None, key
        return dict(json.loads(data))

    board = read("leaderboards/overall.json")
    assert board["board"] == "overall" and board["window"] == "all-time"
    assert board["participants"] == 4
    assert [(e["rank"], e["user"], e["points"]) for e in board["entries"]] == [
        (1, "alice", 195),
        (2, "bob", 120),
        (2, "dave", 120),
        (4, "carol", 7),
    ]
    alice_doc = read("users/alice.json")
    assert (alice_doc["points"], alice_doc["balance"]) == (195, 145)
    assert sorted(alice_doc["badges"]) == ["first-100", "quizzer"]
    assert alice_doc["ranks"] == {"overall": 1}
    assert alice_doc["redemptions"] == [{"id": "a10", "reward": "mug", "status": "fulfilled"}]
    bob_doc = read("users/bob.json")
    assert (bob_doc["points"], bob_doc["balance"], bob_doc["badges"]) == (120, 120, ["first-100"])
    assert bob_doc["redemptions"][0]["status"] == "rejected"
    assert "stock" in bob_doc["redemptions"][0]["reason"]
    carol_doc = read("users/carol.json")
    assert (carol_doc["points"], carol_doc["balance"]) == (7, 7)
    assert "balance" in carol_doc["redemptions"][0]["reason"]
    catalog = {r["id"]: r for r in read("catalog.json")["rewards"]}
    assert catalog["mug"]["remaining"] == 0 and catalog["tshirt"]["remaining"] is None
    manifest = read("manifest.json")
    assert manifest["program"] == state.program

    # Nothing changed: no user object is rewritten. Then one user changes: only that one.
    assert run_snapshot(local.load_program_of(state), state.database_url, state.bucket).users_written == 0
    assert post(state, ev("c4", "chatbot.quiz", "carol", at(s, 9, 9), score=99)).json()["accepted"] == 1
    local.wait_scored(state.program)
    report = run_snapshot(local.load_program_of(state), state.database_url, state.bucket)
    assert report.users_written == 1
    assert read("users/carol.json")["points"] == 27
