"""Wire models of the ingest API: what `/openapi.json` documents and the handlers return."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gamify.events import Event

MAX_BATCH = 500


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class EventBatch(_Wire):
    """Several events in one request; each is accepted or rejected on its own."""

    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH, description="1 to 500 events.")


class RejectedEvent(_Wire):
    index: int = Field(description="Position of the event in the request (0 for a single event).")
    id: str | None = Field(description="The event's id, when it had a usable one.")
    reason: str = Field(description="What is wrong, naming the field, e.g. `occurredAt: ...`.")


class IngestResult(_Wire):
    """Every event of the request is in exactly one of: accepted, duplicates, rejected."""

    accepted: int = Field(description="New events, stored in the program's stream.")
    duplicates: int = Field(
        description="Events whose id was already stored (a retry), or repeated inside this request."
    )
    rejected: list[RejectedEvent] = Field(description="Events refused for good: do not resend them.")
    request_id: str = Field(alias="requestId", description="Quote it when asking for support.")


class ErrorBody(_Wire):
    error: str = Field(description="Stable machine-readable code, e.g. `unauthorized`.")
    message: str = Field(description="What went wrong, naming the field or header at fault.")
    request_id: str | None = Field(None, alias="requestId")


class RetryErrorBody(ErrorBody):
    retry_after: int = Field(alias="retryAfter", description="Seconds to wait; also in `Retry-After`.")


class ScheduleErrorBody(ErrorBody):
    start: str = Field(description="Program start (RFC 3339).")
    end: str = Field(description="Program end (RFC 3339).")
    accepting_until: str = Field(
        alias="acceptingUntil", description="end + gracePeriod: the last instant events are taken."
    )


class Health(_Wire):
    status: str = Field(description="`ok`")


class Readiness(_Wire):
    status: str = Field(description="`ready` or `not_ready`")
    nats: bool = Field(description="Connected to NATS.")
    stream: bool = Field(description="The program's stream exists.")
