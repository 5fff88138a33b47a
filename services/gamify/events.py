"""One event, as apps send it and as it travels on the stream.

Apps post `{"id", "type", "user", "occurredAt", "properties", "source"?}`. The ingest service
validates each event on its own (one bad event never sinks its batch) and publishes the
normalised form below, with `receivedAt`, to `gamify.<program>.events.<type>`.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from gamify.program import EVENT_TYPE, describe_errors

MAX_PROPERTIES_BYTES = 4096
MAX_PROPERTIES_DEPTH = 4
MAX_NUMBER = 1e15  # larger unit properties would overflow points arithmetic

# Date, then a time: pydantic alone would also take Unix timestamps (even as strings).
_RFC3339_START = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _check_rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339_START.match(value):
        raise ValueError("must be RFC 3339 with an offset, e.g. 2027-01-05T08:30:00Z")
    return value


def _check_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must be RFC 3339 with an offset, e.g. 2027-01-05T08:30:00Z")
    if not 2000 <= value.year <= 2200:
        raise ValueError("year out of range")
    return value.astimezone(UTC)


def _check_properties(properties: dict[str, Any]) -> None:
    """Nesting depth and numbers of `properties`, in one walk, level by level.

    On the hot path of ingest and of the scorer (every event), so it is one loop rather than a
    recursive walk per check; it stops at the depth limit, so a hostile 10,000-level body
    costs no more than a 5-level one.
    """
    level: list[Any] = [properties]
    depth = 1  # `properties` itself is one level
    while level:
        if depth > MAX_PROPERTIES_DEPTH:
            raise ValueError(f"nested deeper than {MAX_PROPERTIES_DEPTH} levels")
        deeper = []
        for container in level:
            for item in container.values() if type(container) is dict else container:
                kind = type(item)
                if kind is dict or kind is list:
                    deeper.append(item)
                elif kind is float or kind is int:  # bool is not a number here
                    if kind is float and not math.isfinite(item):
                        raise ValueError("numbers must be finite")
                    if abs(item) > MAX_NUMBER:
                        raise ValueError(f"numbers must be within ±{MAX_NUMBER:.0e}")
        level = deeper
        depth += 1


UtcTime = Annotated[datetime, BeforeValidator(_check_rfc3339), AfterValidator(_check_aware)]


class Event(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    id: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="Client-made unique id: the idempotency key. Retries reuse it.",
        examples=["evt-0f8c2a1e-7d41-4c55-9d1a-2d4b8e6f9a10"],
    )
    type: str = Field(
        min_length=1, max_length=64, pattern=EVENT_TYPE, description="Event type, e.g. activity.steps"
    )
    user: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Pseudonymous employee id (never an email or a name).",
        examples=["u-1029"],
    )
    occurred_at: UtcTime = Field(description="When it happened (RFC 3339 with offset).")
    properties: dict[str, Any] = Field(
        default_factory=dict, description='Event details, e.g. {"steps": 8200}.'
    )
    source: str | None = Field(None, max_length=64, description="App that sent it: mobile, web, chatbot…")

    @field_validator("properties")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_properties(value)
        if len(orjson.dumps(value)) > MAX_PROPERTIES_BYTES:
            raise ValueError(f"larger than {MAX_PROPERTIES_BYTES} bytes")
        return value


class StreamEvent(Event):
    """What is published on the stream: the event plus when ingest received it."""

    received_at: UtcTime

    def record(self) -> EventRecord:
        return EventRecord(
            self.id, self.type, self.user, self.occurred_at, self.received_at, self.source, self.properties
        )

    def to_bytes(self) -> bytes:
        # Straight to JSON bytes in pydantic-core: a dict first, then orjson, cost twice as much.
        return _STREAM_JSON.dump_json(self, by_alias=True, exclude_none=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> StreamEvent:
        return cls.model_validate_json(data)


_STREAM_JSON: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)


class EventRecord(NamedTuple):
    """A validated StreamEvent's fields as a plain tuple: what the scoring worker hands to a lane
    process (pickled several times cheaper than the model, and not validated a second time)."""

    id: str
    type: str
    user: str
    occurred_at: datetime
    received_at: datetime
    source: str | None
    properties: dict[str, Any]


class EventRejected(ValueError):
    """One event that cannot be accepted; `reason` names the field."""

    def __init__(self, event_id: str | None, reason: str):
        super().__init__(reason)
        self.event_id = event_id
        self.reason = reason


def parse_event(raw: Any, received_at: datetime) -> StreamEvent:
    """Validate one event as a client sent it, stamped with when ingest received it; raise
    EventRejected with the field named.

    Validated as the StreamEvent it becomes, in one pass: building that from a validated Event
    cost more than the validation itself. `receivedAt` is not the client's to set: such an event
    is validated as a plain Event, which refuses it (an unknown field) along with any other error.
    """
    if not isinstance(raw, dict):
        raise EventRejected(None, "event must be a JSON object")
    event_id = raw.get("id")
    try:
        if "receivedAt" in raw or "received_at" in raw:
            Event.model_validate(raw)  # raises: extra fields are forbidden
        return StreamEvent.model_validate({**raw, "receivedAt": received_at})
    except ValidationError as exc:
        raise EventRejected(event_id if isinstance(event_id, str) else None, describe_errors(exc)) from exc
