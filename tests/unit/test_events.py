"""parse_event: one raw event in, a normalised StreamEvent or an EventRejected naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from gamify.events import (
    MAX_PROPERTIES_BYTES,
    MAX_PROPERTIES_DEPTH,
    Event,
    EventRejected,
    StreamEvent,
    parse_event,
)

RECEIVED = datetime(2027, 1, 5, 12, 0, tzinfo=UTC)


def raw(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "evt-0f8c2a1e:7d41.1",
        "type": "activity.steps",
        "user": "u-1029",
        "occurredAt": "2027-01-05T08:30:00-03:00",
        "properties": {"steps": 8200, "device": {"kind": "watch"}},
        "source": "mobile",
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


def nested(levels: int) -> dict[str, Any]:
    """`properties` with `levels` levels of objects (properties itself is the first)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"inner": value}
    return value


def rejected(event: Any) -> EventRejected:
    with pytest.raises(EventRejected) as raised:
        parse_event(event, RECEIVED)
    return raised.value


def test_valid_event_is_normalised_to_utc() -> None:
    event = parse_event(raw(), RECEIVED)
    assert event.id == "evt-0f8c2a1e:7d41.1"
    assert event.type == "activity.steps"
    assert event.user == "u-1029"
    assert event.occurred_at == datetime(2027, 1, 5, 11, 30, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC
    assert event.properties == {"steps": 8200, "device": {"kind": "watch"}}
    assert event.source == "mobile"


def test_optional_fields() -> None:
    event = parse_event(raw(properties=..., source=..., occurredAt="2027-01-05T08:30:00Z"), RECEIVED)
    assert event.properties == {} and event.source is None
    assert event.occurred_at == datetime(2027, 1, 5, 8, 30, tzinfo=UTC)


def test_stream_event_round_trips_through_bytes() -> None:
    stream = parse_event(raw(), RECEIVED)
    assert stream.received_at == RECEIVED
    data = stream.to_bytes()
    assert orjson.loads(data)["occurredAt"] == "2027-01-05T11:30:00Z"
    assert orjson.loads(data)["receivedAt"] == "2027-01-05T12:00:00Z"
    assert StreamEvent.from_bytes(data) == stream


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"id": "-starts-with-dash"}, "id", "pattern"),
        ({"id": "has space"}, "id", "pattern"),
        ({"id": "slash/inside"}, "id", "pattern"),
        ({"id": "a" * 129}, "id", "at most 128"),
        ({"id": ""}, "id", "at least 1"),
        ({"type": "Activity.Steps"}, "type", "pattern"),
        ({"type": "activity..steps"}, "type", "pattern"),
        ({"type": "activity.*"}, "type", "pattern"),
        ({"type": "a" * 65}, "type", "at most 64"),
        ({"user": "jane@example.com"}, "user", "pattern"),
        ({"user": "u" * 129}, "user", "at most 128"),
        ({"occurredAt": "2027-01-05T08:30:00"}, "occurredAt", "offset"),
        ({"occurredAt": "yesterday"}, "occurredAt", "RFC 3339"),
        ({"occurredAt": 1_799_999_999}, "occurredAt", "RFC 3339"),  # Unix time: not RFC 3339
        ({"occurredAt": "1799999999"}, "occurredAt", "RFC 3339"),
        ({"occurredAt": "1999-12-31T23:00:00Z"}, "occurredAt", "year out of range"),
        ({"occurredAt": "9999-12-31T23:00:00-03:00"}, "occurredAt", "year out of range"),
        ({"properties": nested(MAX_PROPERTIES_DEPTH + 1)}, "properties", "deeper"),
        ({"properties": {"list": [[[[1]]]]}}, "properties", "deeper"),
        ({"properties": {"blob": "x" * MAX_PROPERTIES_BYTES}}, "properties", "larger than"),
        ({"properties": {"x": float("nan")}}, "properties", "finite"),
        ({"properties": {"x": float("inf")}}, "properties", "finite"),
        ({"properties": {"x": [1, float("-inf")]}}, "properties", "finite"),
        ({"properties": {"steps": 10**16}}, "properties", "within"),
        ({"properties": {"deep": {"n": -2e15}}}, "properties", "within"),
        ({"properties": {"huge": 10**400}}, "properties", "within"),
        ({"properties": [1, 2]}, "properties", "dictionary"),
        ({"source": "s" * 65}, "source", "at most 64"),
        ({"receivedAt": "2027-01-05T08:30:00Z"}, "receivedAt", "Extra inputs"),
        ({"received_at": "2027-01-05T08:30:00Z"}, "received_at", "Extra inputs"),
        ({"type": ...}, "type", "required"),
        ({"user": ...}, "user", "required"),
        ({"occurredAt": ...}, "occurredAt", "required"),
    ],
)
def test_each_field_is_validated(changes: dict[str, Any], field: str, words: str) -> None:
    event = raw(**changes)
    error = rejected(event)
    assert error.reason.startswith(f"{field}: "), error.reason
    assert words in error.reason, error.reason
    assert str(error) == error.reason
    assert error.event_id == event["id"]  # the id is carried even when it is the bad field


def test_rejection_without_an_id() -> None:
    error = rejected(raw(id=...))
    assert error.event_id is None
    assert error.reason.startswith("id: ")
    error = rejected(raw(id=42))
    assert error.event_id is None and "id: " in error.reason


def test_every_bad_field_is_named() -> None:
    error = rejected(raw(type="BAD TYPE", user="", occurredAt="2027-01-05T08:30:00"))
    for field in ("type", "user", "occurredAt"):
        assert f"{field}: " in error.reason


@pytest.mark.parametrize("value", [None, [], [raw()], "event", 7, True])
def test_non_object_is_rejected(value: Any) -> None:
    error = rejected(value)
    assert error.event_id is None
    assert "JSON object" in error.reason


def test_depth_limit_is_exact() -> None:
    assert parse_event(raw(properties=nested(MAX_PROPERTIES_DEPTH)), RECEIVED).properties
    assert parse_event(
        raw(properties={"a": [[{"b": 1}]]}), RECEIVED
    ).properties  # 4 levels: object, list, list, object
    assert "deeper" in rejected(raw(properties={"a": [[{"b": {}}]]})).reason


def test_hostile_nesting_is_a_rejection_not_a_crash() -> None:
    # orjson parses up to 1024 levels: parse_event must reject it, not hit the recursion limit.
    body = '{"a":' * 1000 + "1" + "}" * 1000
    assert "deeper" in rejected(raw(properties=orjson.loads(body))).reason


def test_size_limit_is_exact() -> None:
    overhead = len(orjson.dumps({"blob": ""}))
    fits = {"blob": "x" * (MAX_PROPERTIES_BYTES - overhead)}
    assert len(orjson.dumps(fits)) == MAX_PROPERTIES_BYTES
    assert parse_event(raw(properties=fits), RECEIVED).properties == fits
    assert (
        "larger than"
        in rejected(raw(properties={"blob": "x" * (MAX_PROPERTIES_BYTES - overhead + 1)})).reason
    )


def test_numbers_at_the_limit_and_booleans_are_fine() -> None:
    event = parse_event(raw(properties={"a": 10**15, "b": -1e15, "c": True, "d": 0.5, "e": None}), RECEIVED)
    assert event.properties["a"] == 10**15


def test_received_at_is_ingests_not_the_clients_and_other_errors_are_still_named() -> None:
    refused = rejected(raw(receivedAt="2020-01-01T00:00:00Z", user=""))
    assert "receivedAt" in refused.reason and "user" in refused.reason, refused.reason
    assert refused.event_id == "evt-0f8c2a1e:7d41.1"


def test_event_is_frozen() -> None:
    event = parse_event(raw(), RECEIVED)
    with pytest.raises(ValueError):
        event.user = "someone-else"  # type: ignore[misc]
    assert isinstance(event, Event)
