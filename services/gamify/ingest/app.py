"""The ingest HTTP API of one program (DESIGN.md, "Ingest HTTP API"; docs/api.md for clients).

`POST /v1/events` takes one event or a batch; each event is validated on its own, published to
the program's stream with its id as `Nats-Msg-Id`, and counted as accepted only once JetStream
acknowledged it. Whatever the input, a client error is a 4xx with `{"error", "message"}`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from gamify.credentials import KeyRing
from gamify.ingest.auth import authenticate
from gamify.ingest.body import (
    MAX_BODY_BYTES,
    MAX_DECODED_BYTES,
    check_content_encoding,
    check_content_type,
    gunzip_limited,
    parse_json,
    raw_events,
    read_limited,
)
from gamify.ingest.context import RequestContext
from gamify.ingest.errors import ApiError
from gamify.ingest.metrics import CONTENT_TYPE_LATEST, IngestMetrics
from gamify.ingest.models import (
    MAX_BATCH,
    ErrorBody,
    EventBatch,
    Health,
    IngestResult,
    Readiness,
    RetryErrorBody,
    ScheduleErrorBody,
)
from gamify.ingest.publisher import DEFAULT_PUBLISH_TIMEOUT, EventPublisher, StreamUnavailable
from gamify.ingest.ratelimit import RateLimiter, retry_after_seconds
from gamify.ingest.triage import triage
from gamify.logs import FieldLogger, get_logger
from gamify.naming import ProgramNames
from gamify.nats_login import NatsLogin
from gamify.program import Program
from gamify.schedule import request_gate

STREAM_RETRY_AFTER = 5  # seconds: long enough for a NATS reconnect, short enough for a phone
BODY_READ_TIMEOUT = 60.0  # a slow phone may take a while to upload 1 MiB; a stalled one may not
API_KEY_SCHEME = "apiKey"  # the OpenAPI security scheme: `Authorization: Bearer <api key>`
ROUTES = frozenset({"/v1/events", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})

_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    422: "invalid_body",
}


def _error(text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


def _retry(model: type[ErrorBody], text: str) -> dict[str, Any]:
    header = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
    return {"model": model, "description": text, "headers": {"Retry-After": header}}


EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("Not JSON, bad UTF-8, or broken gzip."),
    401: {
        "model": ErrorBody,
        "description": "No API key, or not an active key of this program.",
        "headers": {
            "WWW-Authenticate": {"description": '`Bearer realm="gamify"`', "schema": {"type": "string"}}
        },
    },
    408: _error("The body did not arrive in time."),
    409: {"model": ScheduleErrorBody, "description": "The program has not started, or is suspended."},
    410: {"model": ScheduleErrorBody, "description": "The program ended and its grace period passed."},
    413: _error(f"Body over {MAX_BODY_BYTES} bytes, or over {MAX_DECODED_BYTES} bytes decompressed."),
    415: _error("Content-Type is not application/json, or Content-Encoding is not gzip."),
    422: _error(f'The body is not an event nor {{"events": [...]}} with 1 to {MAX_BATCH} events.'),
    429: _retry(RetryErrorBody, "This API key sent too many requests; wait `Retry-After` seconds."),
    503: _retry(RetryErrorBody, "The stream cannot take events now; nothing was stored. Retry later."),
}

EVENTS_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": (
        'One event, or `{"events": [...]}` with up to 500 events. May be sent with `Content-Encoding: gzip`.'
    ),
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/Event"},
                    {"$ref": "#/components/schemas/EventBatch"},
                ]
            },
            "examples": {
                "single": {
                    "summary": "One event",
                    "value": {
                        "id": "evt-7d41-0001",
                        "type": "activity.steps",
                        "user": "u-1029",
                        "occurredAt": "2027-01-05T08:30:00-03:00",
                        "properties": {"steps": 8200},
                        "source": "mobile",
                    },
                },
                "batch": {
                    "summary": "A batch",
                    "value": {
                        "events": [
                            {
                                "id": "evt-7d41-0002",
                                "type": "workout.completed",
                                "user": "u-1029",
                                "occurredAt": "2027-01-05T09:00:00Z",
                                "properties": {"minutes": 30},
                            },
                            {
                                "id": "evt-7d41-0003",
                                "type": "reward.redeem",
                                "user": "u-1029",
                                "occurredAt": "2027-01-05T09:05:00Z",
                                "properties": {"reward": "water-bottle"},
                            },
                        ]
                    },
                },
            },
        }
    },
}


def create_app(
    program: Program,
    nats_url: str,
    key_hashes: Iterable[str],
    *,
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
    body_timeout: float = BODY_READ_TIMEOUT,
    clock: Callable[[], datetime] | None = None,
    registry: CollectorRegistry | None = None,
    nats_login: NatsLogin | None = None,
) -> FastAPI:
    """The ingest app of `program`; connects to NATS in the background when it starts."""
    spec = program.spec
    names = ProgramNames(program.name)
    keyring = KeyRing(key_hashes)
    limiter = RateLimiter(spec.ingest.rate_limit.requests_per_second, spec.ingest.rate_limit.burst)
    log = get_logger("gamify.ingest", program=program.name, tenant=spec.tenant)
    publisher = EventPublisher(
        nats_url,
        names,
        publish_timeout=publish_timeout,
        log=get_logger("gamify.ingest.publisher", program=program.name, tenant=spec.tenant),
        login=nats_login,
    )
    metrics = IngestMetrics(registry)
    now_utc = clock or (lambda: datetime.now(UTC))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not len(keyring):
            log.warning("no API key hashes configured: every request will get 401")
        publisher.start()
        log.info("ingest started", stream=names.stream)
        yield
        # uvicorn calls this after in-flight requests finished (graceful shutdown on SIGTERM).
        await publisher.close()
        log.info("ingest stopped")

    app = FastAPI(
        title=f"gamify ingest: {program.name}",
        version="v1",
        description="Send events of one gamification program. See docs/api.md.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.publisher = publisher
    app.state.metrics = metrics
    app.add_middleware(RequestContext, metrics=metrics, log=log, routes=ROUTES)
    _install_error_handlers(app, log)

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=IngestResult,
        responses=EVENTS_RESPONSES,
        openapi_extra={"requestBody": EVENTS_REQUEST_BODY, "security": [{API_KEY_SCHEME: []}]},
        summary="Send one event or a batch",
        description=(
            "Each event is accepted, a duplicate (its id was already stored), or rejected with a "
            "reason; one bad event never sinks its batch. Accepted means stored in the stream."
        ),
    )
    async def post_events(request: Request) -> IngestResult:
        request_id: str = request.state.request_id
        rlog = log.bind(request_id=request_id)
        key_id = authenticate(keyring, request.headers.get("authorization"))
        wait = limiter.acquire(key_id)
        if wait > 0:
            seconds = retry_after_seconds(wait)
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests for this API key: at most {spec.ingest.rate_limit.requests_per_second:g}"
                f"/s with bursts of {spec.ingest.rate_limit.burst}",
                headers={"Retry-After": str(seconds)},
                details={"retryAfter": seconds},
            )
        now = now_utc()
        gate = request_gate(spec, now)
        if gate is not None:
            raise ApiError(gate.status, gate.reason.value, gate.message, details=gate.body())

        items = await _read_events(request, body_timeout)
        metrics.batch_size.observe(len(items))

        sorted_events = triage(spec, items, now)
        to_publish = sorted_events.to_publish

        published = []
        if to_publish:
            started = time.perf_counter()
            try:
                published = await publisher.publish(to_publish)
            except StreamUnavailable as exc:
                metrics.publish_failures.inc()
                rlog.warning("stream unavailable: nothing claimed", error=str(exc), events=len(to_publish))
                raise ApiError(
                    503,
                    "stream_unavailable",
                    f"events cannot be stored right now ({exc}); none of this request was accepted: "
                    "retry it unchanged (same ids) later",
                    headers={"Retry-After": str(STREAM_RETRY_AFTER)},
                    details={"retryAfter": STREAM_RETRY_AFTER},
                ) from None
            metrics.publish_seconds.observe(time.perf_counter() - started)

        for entry, reason_class in zip(sorted_events.rejected, sorted_events.reject_classes, strict=True):
            rlog.info("event rejected", event_id=entry.id, index=entry.index, reason=entry.reason)
            metrics.count_event("rejected", reason_class)
        # One line per request names every event id (grep an id to follow it end to end);
        # a line per event costs a quarter of ingest's CPU, so those are DEBUG only.
        accepted_ids = [done.event_id for done in published if not done.duplicate]
        duplicate_ids = sorted_events.repeated + [done.event_id for done in published if done.duplicate]
        if rlog.isEnabledFor(logging.DEBUG):
            for done in published:
                outcome = "duplicate" if done.duplicate else "accepted"
                rlog.debug(f"event {outcome}", event_id=done.event_id, seq=done.seq, key_id=key_id)
        accepted, duplicates = len(accepted_ids), len(duplicate_ids)
        metrics.count_event("accepted", n=accepted)
        metrics.count_event("duplicate", n=duplicates)
        rejected = sorted_events.rejected
        rlog.info(
            "events ingested",
            key_id=key_id,
            accepted=accepted,
            duplicates=duplicates,
            rejected=len(rejected),
            event_ids=accepted_ids,
            duplicate_ids=duplicate_ids,
        )
        return IngestResult(
            accepted=accepted, duplicates=duplicates, rejected=rejected, request_id=request_id
        )

    @app.get("/healthz", response_model=Health, summary="The process is alive")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not connected to NATS, or no stream."}},
        summary="Ready to accept events: connected to NATS and the stream exists",
    )
    async def readyz() -> JSONResponse:
        nats_up = publisher.connected
        stream_up = nats_up and await publisher.stream_exists()
        ready = nats_up and stream_up
        body = Readiness(status="ready" if ready else "not_ready", nats=nats_up, stream=stream_up)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
        summary="Prometheus metrics",
    )
    async def prometheus_metrics() -> Response:
        metrics.nats_connected.set(1 if publisher.connected else 0)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            # The body is read by hand (gzip, limits, per-event validation), so FastAPI does not
            # see its models: add them, so `/openapi.json` describes what the endpoint takes.
            batch = EventBatch.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(batch.pop("$defs", {}))
            components["EventBatch"] = batch
            # The key is checked by hand too (constant time, several active keys): declare it.
            schema["components"]["securitySchemes"] = {
                API_KEY_SCHEME: {"type": "http", "scheme": "bearer", "description": "The program's API key."}
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _read_events(request: Request, body_timeout: float) -> list[Any]:
    """Content checks, the size-limited (and maybe gunzipped) body, JSON, single-or-batch."""
    check_content_type(request.headers.get("content-type"))
    gzipped = check_content_encoding(request.headers.get("content-encoding"))
    try:
        async with asyncio.timeout(body_timeout):
            raw = await read_limited(request.stream(), request.headers.get("content-length"))
    except TimeoutError:
        # Close the connection: otherwise the server keeps reading what the client still trickles.
        raise ApiError(
            408,
            "request_timeout",
            f"the body did not arrive within {body_timeout:g}s",
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away before sending the body") from None
    data = gunzip_limited(raw) if gzipped else raw
    return raw_events(parse_json(data))


def _install_error_handlers(app: FastAPI, log: FieldLogger) -> None:
    """Every error is JSON `{"error", "message", "requestId"}`; bad input never becomes a 500."""

    def respond(
        request: Request, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        body = {**body, "requestId": getattr(request.state, "request_id", None)}
        return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return respond(request, exc.status, exc.body(), exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return respond(request, exc.status_code, {"error": code, "message": str(exc.detail)}, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(
            ".".join(str(p) for p in err.get("loc", ())) + ": " + err.get("msg", "") for err in exc.errors()
        )
        return respond(request, 422, {"error": "invalid_body", "message": where or "invalid request"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Only a bug gets here (every input problem is an ApiError); log it with its traceback.
        log.exception("unhandled error", request_id=getattr(request.state, "request_id", None))
        return respond(request, 500, {"error": "internal", "message": "internal error; it has been logged"})
