"""The scoring worker against the real NATS JetStream and MariaDB.

Events are published to the program's stream the way ingest publishes them (StreamEvent bytes,
`Nats-Msg-Id` = event id); workers run as asyncio tasks of this test, bound to the durable that
provisioning created. Totals are checked against hand-computed values, row by row.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, text

from gamify.deadletters import (
    HEADER_EVENT_ID,
    HEADER_REASON,
    HEADER_SEQUENCE,
    HEADER_SUBJECT,
)
from gamify.events import StreamEvent
from tests.integration.scoring_support import (
    MSG_ID,
    SCENARIO_SPEC,
    Target,
    provisioned,
    publish,
    pure_totals,
    query,
    running_workers,
    stream_event,
    wait_drained,
)

# -- a hand-computed scenario (SCENARIO_SPEC, in scoring_support) -----------------------------------


def scenario_events() -> list[StreamEvent]:
    return [
        # alice: 23:00 and 23:30 local on Jan 4 (already Jan 5 in UTC), then 00:10 local Jan 5.
        stream_event("a1", "activity.steps", "alice", "2027-01-05T02:00:00Z", steps=3500),  # 30
        stream_event("a2", "activity.steps", "alice", "2027-01-05T02:30:00Z", steps=4200),  # 40 -> cap: 20
        stream_event("a3", "activity.steps", "alice", "2027-01-05T03:10:00Z", steps=2000),  # new day: 20
        # Saturday Jan 2: launch x2 and weekend x1.5 stack to x3.
        stream_event("a4", "app.login", "alice", "2027-01-02T12:00:00-03:00"),  # 15 + 60 once
        stream_event("a5", "app.login", "alice", "2027-01-06T10:00:00-03:00"),  # 5
        stream_event("a6", "app.login", "alice", "2027-01-06T11:00:00-03:00"),  # 5, 3rd login: badge
        stream_event(
            "a7", "reward.redeem", "alice", "2027-01-06T12:00:00-03:00", reward="mug"
        ),  # the last mug
        # bob: Sunday Jan 3, launch x2: 120 * 2 = 240, capped at 50.
        stream_event("b1", "activity.steps", "bob", "2027-01-03T10:00:00-03:00", steps=12000),
        stream_event("b2", "reward.redeem", "bob", "2027-01-06T13:00:00-03:00", reward="mug"),
        stream_event("b3", "reward.redeem", "bob", "2027-01-06T13:01:00-03:00", reward="bike"),
        stream_event("b4", "reward.redeem", "bob", "2027-01-06T13:02:00-03:00", reward="nope"),
    ]


async def test_hand_computed_scenario_and_database_dedupe(nats_url: str, mysql_admin_url: str) -> None:
    async with provisioned(SCENARIO_SPEC, nats_url, mysql_admin_url) as target:
        events = scenario_events()
        await publish(target, events)
        # The same events again under other message ids: the stream's dedupe window does not
        # catch them (as after the window expired); the database must.
        again = [e for e in events if e.id in ("a2", "a4", "a7")]
        await publish(target, again, msg_ids=[f"{e.id}-resent" for e in again])
        async with running_workers(target, batch_size=4) as workers:
            await wait_drained(target)
        assert workers[0].totals.scored == len(events)
        assert workers[0].totals.duplicates == 3
        assert workers[0].totals.dead_lettered == 0
        url = target.database_url

        assert query(url, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events") == [(11, 11)]
        assert query(url, "SELECT user_id, points, spent, rev > 0 FROM users ORDER BY user_id") == [
            ("alice", 155, 40, 1),
            ("bob", 50, 0, 1),
        ]
        ledger = query(
            url,
            "SELECT event_id, kind, COALESCE(rule_id, reward_id), base_points, multiplier, points, local_day "
            "FROM ledger ORDER BY id",
        )
        one, three, two = Decimal(1), Decimal(3), Decimal(2)
        assert ledger == [
            ("a1", "award", "steps", 30, one, 30, date(2027, 1, 4)),
            ("a2", "award", "steps", 40, one, 20, date(2027, 1, 4)),
            ("a3", "award", "steps", 20, one, 20, date(2027, 1, 5)),
            ("a4", "award", "login", 5, three, 15, date(2027, 1, 2)),
            ("a4", "award", "first-login", 20, three, 60, date(2027, 1, 2)),
            ("a5", "award", "login", 5, one, 5, date(2027, 1, 6)),
            ("a6", "award", "login", 5, one, 5, date(2027, 1, 6)),
            ("a7", "spend", "mug", -40, one, -40, date(2027, 1, 6)),
            ("b1", "award", "steps", 120, two, 50, date(2027, 1, 3)),
        ]
        assert query(url, "SELECT user_id, rule_id, local_day, points FROM cap_counters ORDER BY 1, 3") == [
            ("alice", "steps", date(2027, 1, 4), 50),
            ("alice", "steps", date(2027, 1, 5), 20),
            ("bob", "steps", date(2027, 1, 3), 50),
        ]
        assert query(url, "SELECT user_id, rule_id, awards FROM rule_counts ORDER BY 1, 2") == [
            ("alice", "first-login", 1),
            ("alice", "login", 3),
            ("alice", "steps", 3),
            ("bob", "steps", 1),
        ]
        assert query(url, "SELECT user_id, badge_id, event_id FROM badges ORDER BY 1, 2") == [
            ("alice", "fifty", "a2"),
            ("alice", "regular", "a6"),
            ("bob", "fifty", "b1"),
        ]
        assert query(
            url, "SELECT event_id, user_id, reward_id, status, reason, cost FROM redemptions ORDER BY 1"
        ) == [
            ("a7", "alice", "mug", "fulfilled", None, 40),
            ("b2", "bob", "mug", "rejected", "out of stock", 40),
            ("b3", "bob", "bike", "rejected", "insufficient balance: 50 < 1000", 1000),
            ("b4", "bob", "nope", "rejected", "unknown reward 'nope'", 0),
        ]
        assert query(url, "SELECT reward_id, stock, redeemed FROM reward_stock ORDER BY 1") == [
            ("bike", None, 0),
            ("mug", 1, 1),
        ]
        # Boards count points earned (the spend does not lower alice), by local day and ISO week.
        # (All-time is the users' own totals, checked above: it has no board rows.)
        assert query(url, "SELECT user_id, window_key, points FROM board_points ORDER BY 1, 2") == [
            ("alice", "d:2027-01-02", 75),
            ("alice", "d:2027-01-04", 50),
            ("alice", "d:2027-01-05", 20),
            ("alice", "d:2027-01-06", 10),
            ("alice", "w:2026-W53", 75),
            ("alice", "w:2027-W01", 80),
            ("bob", "d:2027-01-03", 50),
            ("bob", "w:2026-W53", 50),
        ]
        # The engine alone, over the same events in stream order, agrees.
        assert pure_totals(target.program, events) == {"alice": (155, 40), "bob": (50, 0)}


# Quotes, backslashes, percent signs and format marks, a NUL, non-ASCII: the scorer renders
# values as SQL literals itself (store._literal_renderer), so they must come back unchanged.
TRICKY_TEXT = "it's 50% \\ \\' \"q\" %s %% %(x)s \x00 \u2019 \U0001f600 ; DROP TABLE users; --"


async def test_text_values_are_stored_exactly(nats_url: str, mysql_admin_url: str) -> None:
    async with provisioned(SCENARIO_SPEC, nats_url, mysql_admin_url) as target:
        events = [
            stream_event("t1", "activity.steps", "o.brien-1", "2027-01-05T02:00:00Z", steps=3500,
                         note=TRICKY_TEXT, nested={TRICKY_TEXT: [TRICKY_TEXT]}),
            stream_event("t2", "reward.redeem", "o.brien-1", "2027-01-06T12:00:00Z", reward=TRICKY_TEXT),
        ]  # fmt: skip
        await publish(target, events)
        async with running_workers(target) as workers:
            await wait_drained(target)
        assert workers[0].totals.scored == 2
        url = target.database_url
        (properties,) = query(url, "SELECT properties FROM events WHERE event_id = 't1'")[0]
        assert orjson.loads(properties) == {
            "steps": 3500,
            "note": TRICKY_TEXT,
            "nested": {TRICKY_TEXT: [TRICKY_TEXT]},
        }
        assert query(url, "SELECT user_id, reward_id, status FROM redemptions") == [
            ("o.brien-1", TRICKY_TEXT, "rejected")
        ]
        assert query(url, "SELECT user_id, points FROM users") == [("o.brien-1", 30)]


def inject_ledger_fault(admin_url: str, schema: str, event_id: str) -> None:
    """Make the database refuse every ledger row of one event (SQLSTATE 45000)."""
    engine = create_engine(admin_url)
    with engine.begin() as connection:
        connection.execute(text(f"USE `{schema}`"))
        connection.execute(
            text(
                "CREATE TRIGGER inject_fault BEFORE INSERT ON ledger FOR EACH ROW "
                f"IF NEW.event_id = '{event_id}' THEN "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected fault'; END IF"
            )
        )
    engine.dispose()


async def test_poison_messages_go_to_dead_letter_and_the_rest_is_scored(
    nats_url: str, mysql_admin_url: str
) -> None:
    async with provisioned(SCENARIO_SPEC, nats_url, mysql_admin_url) as target:
        names = target.names
        before = stream_event("g1", "activity.steps", "carol", "2027-01-05T12:00:00Z", steps=1000)
        # A valid event the database refuses every time: a fault injected with a trigger.
        overflow = stream_event("p1", "activity.run", "carol", "2027-01-05T12:01:00Z", meters=5)
        inject_ledger_fault(mysql_admin_url, names.schema, "p1")
        after = stream_event("g2", "activity.steps", "carol", "2027-01-05T12:02:00Z", steps=2000)
        await publish(target, [before])
        ack = await target.js.publish(
            names.event_subject("activity.steps"), b"{not json", headers={MSG_ID: "garbage-1"}
        )
        await publish(target, [overflow, after])
        async with running_workers(target, batch_size=10, max_deliver=2, retry_delay=0.2) as workers:
            await wait_drained(target)
        assert workers[0].totals.dead_lettered == 2

        garbage = await target.js.get_last_msg(names.stream, names.dead_letter_subject("activity.steps"))
        assert garbage.data == b"{not json"
        assert garbage.headers is not None
        assert garbage.headers[HEADER_REASON].startswith("not a valid event")
        assert garbage.headers[HEADER_SUBJECT] == names.event_subject("activity.steps")
        assert garbage.headers[HEADER_SEQUENCE] == str(ack.seq)
        assert garbage.headers[HEADER_EVENT_ID] == "garbage-1"

        poison = await target.js.get_last_msg(names.stream, names.dead_letter_subject("activity.run"))
        assert poison.headers is not None and poison.data is not None
        assert StreamEvent.from_bytes(poison.data) == overflow
        assert poison.headers[HEADER_EVENT_ID] == "p1"
        assert poison.headers[HEADER_SUBJECT] == names.event_subject("activity.run")
        reason = poison.headers[HEADER_REASON]
        assert "failed 2 times" in reason and "injected fault" in reason, reason

        url = target.database_url
        assert query(url, "SELECT event_id FROM events ORDER BY event_id") == [("g1",), ("g2",)]
        assert query(url, "SELECT points FROM users WHERE user_id = 'carol'") == [(30,)]


RACE_SPEC: dict[str, Any] = {
    "schedule": {"start": "2027-01-01T00:00:00Z", "end": "2027-02-01T00:00:00Z",
                 "timezone": "America/Bogota"},
    "rules": [
        {"id": "steps", "event": "activity.steps", "points": 10, "unit": {"property": "steps", "size": 1000},
         "dailyCap": 100},
    ],
    "rewards": [{"id": "mug", "name": "Mug", "cost": 30, "stock": 5}],
}  # fmt: skip
RACE_USERS = [f"r-{index:02d}" for index in range(12)]


async def _both_waiting(target: Target, count: int) -> None:
    deadline = time.monotonic() + 10
    while (await target.js.consumer_info(target.names.stream, target.names.durable)).num_waiting < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{count} workers never pulled")
        await asyncio.sleep(0.05)


async def test_two_workers_keep_caps_and_stock_exact(nats_url: str, mysql_admin_url: str) -> None:
    async with provisioned(RACE_SPEC, nats_url, mysql_admin_url) as target:
        # 25 step events per user on one local day, interleaved across users so that both
        # workers' batches hit the same users' cap counters: 250 points each, capped at 100.
        steps = [
            stream_event(f"s-{user}-{n}", "activity.steps", user,
                         f"2027-01-10T{8 + n // 5:02d}:{n % 5:02d}:00Z", steps=1500)
            for n in range(25)
            for user in RACE_USERS
        ]  # fmt: skip
        # Then two redemptions each (every user can afford three) for 5 mugs.
        redeems = [
            stream_event(f"m-{user}-{n}", "reward.redeem", user, "2027-01-11T12:00:00Z", reward="mug")
            for n in range(2)
            for user in RACE_USERS
        ]
        async with running_workers(target, 2, batch_size=7) as workers:
            await _both_waiting(target, 2)
            await publish(target, steps)
            await wait_drained(target)
            await publish(target, redeems)
            await wait_drained(target)
        assert all(worker.totals.scored > 0 for worker in workers), [w.totals for w in workers]
        assert sum(worker.totals.scored for worker in workers) == len(steps) + len(redeems)

        url = target.database_url
        assert query(url, "SELECT MAX(points) FROM cap_counters") == [(100,)]
        per_day = query(
            url, "SELECT user_id, local_day, SUM(points) FROM ledger WHERE kind = 'award' GROUP BY 1, 2"
        )
        assert sorted(row[2] for row in per_day) == [100] * len(RACE_USERS)
        assert query(url, "SELECT reward_id, stock, redeemed FROM reward_stock") == [("mug", 5, 5)]
        statuses = dict(query(url, "SELECT status, COUNT(*) FROM redemptions GROUP BY status"))
        assert statuses == {"fulfilled": 5, "rejected": len(redeems) - 5}
        reasons = query(url, "SELECT DISTINCT reason FROM redemptions WHERE status = 'rejected'")
        assert reasons == [("out of stock",)]

        # Totals equal a single worker's (the engine alone, in stream order): who got the last
        # mugs may differ, how many points and how much was spent may not.
        expected = pure_totals(target.program, steps + redeems)
        users = query(url, "SELECT user_id, points, spent FROM users")
        assert {user: points for user, points, _ in users} == {user: p for user, (p, _) in expected.items()}
        assert sum(spent for _, _, spent in users) == sum(s for _, s in expected.values()) == 5 * 30
        assert query(url, "SELECT SUM(points) FROM ledger") == [(Decimal(100 * len(RACE_USERS) - 150),)]
        weekly = "SELECT user_id, SUM(points) FROM board_points WHERE window_key LIKE 'w:%' GROUP BY 1"
        boards = defaultdict(int, query(url, weekly))
        assert all(boards[user] == 100 for user in RACE_USERS)
