"""The ingest HTTP API against a real NATS JetStream (DESIGN.md, "Ingest HTTP API")."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest
from fastapi import FastAPI
from nats.js import JetStreamContext

from gamify.credentials import generate_api_key, hash_api_key
from gamify.events import StreamEvent
from gamify.ingest.app import create_app
from gamify.logs import JsonFormatter, configure_logging
from gamify.naming import ProgramNames
from gamify.program import Program, dump_program, parse_program
from gamify.provisioning.nats import delete_stream, ensure_stream
from tests.conftest import unique_program_id

KEY = generate_api_key("test")
OTHER_KEY = generate_api_key("test")
AUTH = {"Authorization": f"Bearer {KEY}"}
NOW = datetime.now(UTC)


def make_program(
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    grace: str = "72h",
    suspend: bool = False,
    rate: float = 1000,
    burst: int = 1000,
) -> Program:
    start = start or NOW - timedelta(days=1)
    end = end or NOW + timedelta(days=30)
    return parse_program(
        {
            "apiVersion": "gamification.io/v1alpha1",
            "kind": "GamificationProgram",
            "metadata": {"name": unique_program_id("ingest")},
            "spec": {
                "tenant": "acme",
                "schedule": {"start": start.isoformat(), "end": end.isoformat(), "gracePeriod": grace},
                "rules": [{"id": "steps", "event": "activity.steps", "points": 1}],
                "ingest": {"rateLimit": {"requestsPerSecond": rate, "burst": burst}},
                "suspend": suspend,
            },
        }
    )


def event(event_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event_id,
        "type": "activity.steps",
        "user": "u-1",
        "occurredAt": (NOW - timedelta(minutes=1)).isoformat(),
        "properties": {"steps": 1200},
        "source": "mobile",
    }
    body.update(overrides)
    return body


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


@asynccontextmanager
async def running(app: FastAPI, wait_connected: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running (NATS connection), and a client bound to it."""
    async with app.router.lifespan_context(app):
        if wait_connected:
            for _ in range(100):
                if app.state.publisher.connected:
                    break
                await asyncio.sleep(0.05)
            assert app.state.publisher.connected, "ingest did not connect to NATS"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest", timeout=10) as client:
            yield client


Ingest = Callable[..., Any]


@pytest.fixture
async def provisioned(js: JetStreamContext) -> AsyncIterator[Callable[[Program], Any]]:
    """Create a program's stream (the provisioning code's own function); delete it afterwards."""
    created: list[ProgramNames] = []

    async def provision(program: Program) -> ProgramNames:
        names = ProgramNames(program.name)
        await ensure_stream(js, names, max_age=timedelta(days=1))
        created.append(names)
        return names

    yield provision
    for names in created:
        await delete_stream(js, names)


@pytest.fixture
async def client(nats_url: str, provisioned: Callable[[Program], Any]) -> AsyncIterator[httpx.AsyncClient]:
    program = make_program()
    await provisioned(program)
    app = create_app(program, nats_url, [hash_api_key(KEY)])
    async with running(app) as http:
        http.app = app  # type: ignore[attr-defined]
        yield http


async def stored(js: JetStreamContext, program: str) -> list[tuple[str, dict[str, str], StreamEvent]]:
    """Everything in the program's stream: (subject, headers, event)."""
    names = ProgramNames(program)
    info = await js.stream_info(names.stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(names.stream, seq)
        out.append((msg.subject or "", dict(msg.headers or {}), StreamEvent.from_bytes(msg.data or b"")))
    return out


def program_of(http: httpx.AsyncClient) -> str:
    return http.app.state.publisher.names.program  # type: ignore[attr-defined,no-any-return]


# -- accepting events ---------------------------------------------------------------------------


async def test_single_event_is_accepted_and_in_the_stream(
    client: httpx.AsyncClient, js: JetStreamContext
) -> None:
    response = await client.post("/v1/events", json=event("e-1"), headers=AUTH)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 0, [])
    assert body["requestId"] == response.headers["X-Request-Id"]

    [(subject, headers, published)] = await stored(js, program_of(client))
    assert subject == f"gamify.{program_of(client)}.events.activity.steps"
    assert headers["Nats-Msg-Id"] == "e-1"
    assert (published.id, published.user, published.properties) == ("e-1", "u-1", {"steps": 1200})
    assert published.source == "mobile"
    assert abs((published.received_at - datetime.now(UTC)).total_seconds()) < 30


async def test_batch_then_retry_gives_duplicates(client: httpx.AsyncClient, js: JetStreamContext) -> None:
    batch = {"events": [event(f"b-{i}", user=f"u-{i % 3}") for i in range(50)]}
    first = await client.post("/v1/events", json=batch, headers=AUTH)
    assert first.status_code == 202, first.text
    assert (first.json()["accepted"], first.json()["duplicates"]) == (50, 0)

    retry = await client.post("/v1/events", json=batch, headers=AUTH)
    assert retry.status_code == 202
    assert (retry.json()["accepted"], retry.json()["duplicates"]) == (0, 50)

    messages = await stored(js, program_of(client))
    assert [m[2].id for m in messages] == [f"b-{i}" for i in range(50)]


async def test_one_bad_event_does_not_sink_its_batch(client: httpx.AsyncClient) -> None:
    bad_user = event("x-2")
    del bad_user["user"]
    batch = {
        "events": [
            event("x-1"),
            bad_user,
            event("x-3", occurredAt="2027-01-05T08:30:00"),  # no offset
            event("x-4", occurredAt=(NOW - timedelta(days=3)).isoformat()),  # before start
            event("x-5", occurredAt=(NOW + timedelta(hours=1)).isoformat()),  # in the future
            event("x-6", properties=[1, 2]),
            "not an object",
            event("x-1"),  # same id again inside the request
            event("x-9", colour="red"),
        ]
    }
    response = await client.post("/v1/events", json=batch, headers=AUTH)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    reasons = {r["index"]: (r["id"], r["reason"]) for r in body["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 8]
    assert reasons[1][0] == "x-2" and reasons[1][1].startswith("user:")
    assert reasons[2][1].startswith("occurredAt:")
    assert "before the program start" in reasons[3][1]
    assert "future" in reasons[4][1]
    assert reasons[5][1].startswith("properties:")
    assert reasons[6] == (None, "event must be a JSON object")
    assert reasons[8][1].startswith("colour:")


async def test_single_bad_event_is_a_rejection_in_a_202(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", json=event("s-1", type="Bad Type!"), headers=AUTH)
    assert response.status_code == 202
    [rejected] = response.json()["rejected"]
    assert rejected["id"] == "s-1" and rejected["reason"].startswith("type:")


async def test_gzip_body_is_accepted(client: httpx.AsyncClient, js: JetStreamContext) -> None:
    batch = {"events": [event(f"g-{i}") for i in range(20)]}
    response = await client.post(
        "/v1/events",
        content=gzip.compress(orjson.dumps(batch)),
        headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 20
    assert len(await stored(js, program_of(client))) == 20


async def test_gzip_bomb_is_413_quickly(client: httpx.AsyncClient) -> None:
    # ~1 GiB of zeros is ~1 MiB gzipped; inflating it all would take seconds and a GiB of memory.
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=9) as gz:
        chunk = b"\0" * (1 << 20)
        for _ in range(1000):
            gz.write(chunk)
    payload = bomb.getvalue()
    assert len(payload) < 1 << 20
    started = time.perf_counter()
    response = await client.post("/v1/events", content=payload, headers={**AUTH, "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert time.perf_counter() - started < 1.0


async def test_broken_gzip_is_400(client: httpx.AsyncClient) -> None:
    whole = gzip.compress(orjson.dumps(event("z-1")))
    for payload in (b"not gzip at all", whole[: len(whole) // 2]):
        response = await client.post(
            "/v1/events", content=payload, headers={**AUTH, "Content-Encoding": "gzip"}
        )
        assert response.status_code == 400, payload
        assert response.json()["error"] == "bad_gzip"


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'{"id": "\xff\xfe"}', 400, "invalid_json"),
        (b"[1, 2]", 422, "invalid_body"),
        (b'"hello"', 422, "invalid_body"),
        (b'{"events": {"id": "a"}}', 422, "invalid_body"),
        (b'{"events": []}', 422, "invalid_body"),
        (b'{"events": [], "extra": 1}', 422, "invalid_body"),
    ],
)
async def test_bad_bodies(client: httpx.AsyncClient, content: bytes, status: int, code: str) -> None:
    response = await client.post(
        "/v1/events", content=content, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert response.json()["message"]


async def test_more_than_500_events_is_422(client: httpx.AsyncClient) -> None:
    batch = {"events": [event(f"m-{i}") for i in range(501)]}
    response = await client.post("/v1/events", json=batch, headers=AUTH)
    assert response.status_code == 422
    assert "events:" in response.json()["message"] and "501" in response.json()["message"]


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events", content=b" " * (1024 * 1024 + 1), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413


async def test_wrong_content_type_or_encoding_is_415(client: httpx.AsyncClient) -> None:
    text = await client.post("/v1/events", content=b"{}", headers={**AUTH, "Content-Type": "text/plain"})
    assert text.status_code == 415
    brotli = await client.post("/v1/events", content=b"{}", headers={**AUTH, "Content-Encoding": "br"})
    assert brotli.status_code == 415


NASTY_BODIES: list[Any] = [
    {"id": 12, "type": None, "user": [], "occurredAt": 5, "properties": "x"},
    {"id": "a", "type": "activity.steps", "user": "u", "occurredAt": "yesterday"},
    {"id": "a", "type": "activity.steps", "user": "u", "occurredAt": "0001-01-01T00:00:00Z"},
    {"id": "a" * 10_000, "type": "x", "user": "u", "occurredAt": NOW.isoformat()},
    {"id": "a\u0000b", "type": "a.b", "user": "u\ud7ff", "occurredAt": NOW.isoformat()},
    event("n-1", properties={"a": {"b": {"c": {"d": {"e": 1}}}}}),
    event("n-2", properties={"big": 1e300}),
    event("n-3", properties={"big": 10**30}),
    event("n-4", properties={"s": "x" * 5000}),
    event("n-5", type="a.>"),
    event("n-6", type="a.*.b"),
    {"events": [None, True, 1, [], {}]},
    {"events": [event("n-7", occurredAt=None)]},
    {"events": "[]"},
    {"events": None},
    {},
    {"": ""},
]


async def test_never_a_500_for_bad_input(client: httpx.AsyncClient) -> None:
    for body in NASTY_BODIES:
        response = await client.post("/v1/events", content=json.dumps(body).encode(), headers=AUTH)
        assert 200 <= response.status_code < 500, (body, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/json")
    nested = b'{"events": [' + b"[" * 5000 + b"]" * 5000 + b"]}"
    assert (await client.post("/v1/events", content=nested, headers=AUTH)).status_code == 400
    bad_length = await client.post("/v1/events", content=b"{}", headers={**AUTH, "Content-Length": "abc"})
    assert 400 <= bad_length.status_code < 500


async def test_unknown_route_and_method_are_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = await client.get("/v1/events")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


# -- keys ---------------------------------------------------------------------------------------


async def test_missing_or_wrong_key_is_401(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": f"Bearer {OTHER_KEY}"}, {"Authorization": f"Basic {KEY}"}):
        response = await client.post("/v1/events", json=event("k-1"), headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"] == "unauthorized"
        assert KEY not in response.text


async def test_key_rotation_two_keys_both_work(nats_url: str, provisioned: Callable[[Program], Any]) -> None:
    program = make_program()
    await provisioned(program)
    app = create_app(program, nats_url, [hash_api_key(KEY), hash_api_key(OTHER_KEY)])
    async with running(app) as http:
        for i, key in enumerate((KEY, OTHER_KEY)):
            response = await http.post(
                "/v1/events", json=event(f"r-{i}"), headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 202 and response.json()["accepted"] == 1


async def test_api_key_never_appears_in_logs(client: httpx.AsyncClient) -> None:
    output = io.StringIO()
    previous_level = logging.getLogger().level
    configure_logging("DEBUG", service="ingest", stream=output)
    try:
        await client.post("/v1/events", json=event("log-1"), headers=AUTH)
        await client.post("/v1/events", json=event("log-2"), headers={"Authorization": f"Bearer {OTHER_KEY}"})
        await client.post("/v1/events", json=event("log-3"), headers={"Authorization": KEY})
    finally:
        _remove_json_handlers()
        logging.getLogger().setLevel(previous_level)
    text = output.getvalue()
    assert KEY not in text and OTHER_KEY not in text
    lines = [orjson.loads(line) for line in text.splitlines()]
    accepted = [line for line in lines if "log-1" in line.get("event_ids", [])]
    assert accepted and accepted[0]["program"] == program_of(client)
    assert accepted[0]["request_id"] and accepted[0]["msg"] == "events ingested"
    assert {line["status"] for line in lines if line["msg"] == "request"} == {202, 401}


def _remove_json_handlers() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)


# -- schedule -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"start": NOW + timedelta(days=1), "end": NOW + timedelta(days=2)}, 409, "not_started"),
        ({"start": NOW - timedelta(days=9), "end": NOW - timedelta(days=5), "grace": "72h"}, 410, "ended"),
        ({"suspend": True}, 409, "suspended"),
    ],
)
async def test_schedule_gates(nats_url: str, kwargs: dict[str, Any], status: int, code: str) -> None:
    program = make_program(**kwargs)
    app = create_app(program, nats_url, [hash_api_key(KEY)])
    async with running(app, wait_connected=False) as http:
        response = await http.post("/v1/events", json=event("s-1"), headers=AUTH)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == code
    start, end = program.spec.schedule.start, program.spec.schedule.end
    assert datetime.fromisoformat(body["start"]) == start
    assert datetime.fromisoformat(body["end"]) == end
    assert datetime.fromisoformat(body["acceptingUntil"]) == end + program.spec.schedule.grace


async def test_late_events_inside_grace_are_accepted(
    nats_url: str, provisioned: Callable[[Program], Any]
) -> None:
    program = make_program(start=NOW - timedelta(days=9), end=NOW - timedelta(days=1), grace="72h")
    await provisioned(program)
    app = create_app(program, nats_url, [hash_api_key(KEY)])
    async with running(app) as http:
        batch = {
            "events": [
                event("late-1", occurredAt=(NOW - timedelta(days=2)).isoformat()),
                event("late-2", occurredAt=(NOW - timedelta(hours=1)).isoformat()),
            ]
        }
        response = await http.post("/v1/events", json=batch, headers=AUTH)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    assert body["rejected"][0]["id"] == "late-2"
    assert "after the program end" in body["rejected"][0]["reason"]


# -- rate limit ---------------------------------------------------------------------------------


async def test_rate_limit_is_429_with_retry_after(
    nats_url: str, provisioned: Callable[[Program], Any]
) -> None:
    program = make_program(rate=0.2, burst=2)
    await provisioned(program)
    app = create_app(program, nats_url, [hash_api_key(KEY), hash_api_key(OTHER_KEY)])
    async with running(app) as http:
        statuses = [
            (await http.post("/v1/events", json=event(f"rl-{i}"), headers=AUTH)).status_code for i in range(2)
        ]
        limited = await http.post("/v1/events", json=event("rl-3"), headers=AUTH)
        other_key = await http.post(
            "/v1/events", json=event("rl-4"), headers={"Authorization": f"Bearer {OTHER_KEY}"}
        )
    assert statuses == [202, 202]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 5
    assert limited.json()["retryAfter"] == int(limited.headers["Retry-After"])
    assert other_key.status_code == 202  # the limit is per key


# -- stream unavailable -------------------------------------------------------------------------


async def test_missing_stream_is_503_and_not_ready(nats_url: str) -> None:
    program = make_program()  # never provisioned: no stream
    app = create_app(program, nats_url, [hash_api_key(KEY)])
    async with running(app) as http:
        started = time.perf_counter()
        response = await http.post("/v1/events", json={"events": [event("u-1"), event("u-2")]}, headers=AUTH)
        assert time.perf_counter() - started < 3
        ready = await http.get("/readyz")
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error"] == "stream_unavailable"
    assert ready.status_code == 503
    assert ready.json() == {"status": "not_ready", "nats": True, "stream": False}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_nats_unreachable_is_503_fast_and_not_ready() -> None:
    program = make_program()
    app = create_app(program, f"nats://127.0.0.1:{_free_port()}", [hash_api_key(KEY)])
    async with running(app, wait_connected=False) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        started = time.perf_counter()
        response = await http.post("/v1/events", json=event("d-1"), headers=AUTH)
        elapsed = time.perf_counter() - started
        # Bad input is still answered as such while NATS is away.
        rejected = await http.post("/v1/events", json=event("d-2", user=""), headers=AUTH)
    assert ready.status_code == 503 and ready.json()["nats"] is False
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert elapsed < 1
    assert rejected.status_code == 202 and rejected.json()["rejected"][0]["id"] == "d-2"


async def test_readyz_is_200_with_nats_and_stream(client: httpx.AsyncClient) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "nats": True, "stream": True}
    assert (await client.get("/healthz")).json() == {"status": "ok"}


# -- metrics and OpenAPI ------------------------------------------------------------------------


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


async def test_metrics_counters_move(client: httpx.AsyncClient) -> None:
    batch = {"events": [event("mt-1"), event("mt-2"), event("mt-3", user=""), event("mt-1")]}
    assert (await client.post("/v1/events", json=batch, headers=AUTH)).status_code == 202
    assert (await client.post("/v1/events", json=event("mt-1"), headers=AUTH)).status_code == 202
    assert (await client.post("/v1/events", json=event("mt-1"))).status_code == 401
    response = await client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert sample(text, "gamify_ingest_events_total", outcome="accepted", reason="") == 2
    assert sample(text, "gamify_ingest_events_total", outcome="duplicate", reason="") == 2
    assert sample(text, "gamify_ingest_events_total", outcome="rejected", reason="invalid") == 1
    assert sample(text, "gamify_ingest_requests_total", route="/v1/events", status="202") == 2
    assert sample(text, "gamify_ingest_requests_total", route="/v1/events", status="401") == 1
    assert sample(text, "gamify_ingest_batch_size_count") == 2
    assert sample(text, "gamify_ingest_publish_seconds_count") == 2
    assert sample(text, "gamify_ingest_nats_connected") == 1


async def test_openapi_describes_the_events_endpoint(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    post = schema["paths"]["/v1/events"]["post"]
    assert {"202", "400", "401", "409", "410", "413", "415", "422", "429", "503"} <= set(post["responses"])
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert "Retry-After" in post["responses"]["503"]["headers"]
    body_schema = post["requestBody"]["content"]["application/json"]["schema"]
    refs = {option["$ref"].rsplit("/", 1)[1] for option in body_schema["oneOf"]}
    components = schema["components"]["schemas"]
    assert refs == {"Event", "EventBatch"} and refs <= set(components)
    assert set(components["Event"]["required"]) == {"id", "type", "user", "occurredAt"}
    assert components["EventBatch"]["properties"]["events"]["maxItems"] == 500
    ok = post["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(components[ok]["properties"]) == {"accepted", "duplicates", "rejected", "requestId"}
    gone = post["responses"]["410"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"start", "end", "acceptingUntil"} <= set(components[gone]["properties"])
    assert {"/healthz", "/readyz", "/metrics"} <= set(schema["paths"])


async def test_two_apps_in_one_process_keep_separate_metrics(
    client: httpx.AsyncClient, nats_url: str
) -> None:
    other = create_app(make_program(), nats_url, [hash_api_key(KEY)])
    async with running(other, wait_connected=False) as http:
        text = (await http.get("/metrics")).text
    assert sample(text, "gamify_ingest_events_total", outcome="accepted", reason="") == 0


# -- the process --------------------------------------------------------------------------------


async def test_module_serves_and_stops_gracefully_on_sigterm(
    nats_url: str, provisioned: Callable[[Program], Any], tmp_path: Path
) -> None:
    program = make_program()
    await provisioned(program)
    program_file = tmp_path / "program.yaml"
    program_file.write_text(dump_program(program))
    port = _free_port()
    env = {
        **os.environ,
        "GAMIFY_PROGRAM_FILE": str(program_file),
        "GAMIFY_NATS_URL": nats_url,
        "GAMIFY_API_KEY_HASHES": f"{hash_api_key(OTHER_KEY)}, {hash_api_key(KEY)}",
        "GAMIFY_INGEST_HOST": "127.0.0.1",
        "GAMIFY_INGEST_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gamify.ingest"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(100):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            response = await http.post("/v1/events", json=event("p-1"), headers=AUTH)
            assert response.status_code == 202, response.text
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why.
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    output = (process.stdout.read() if process.stdout else b"").decode()
    lines = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any("p-1" in line.get("event_ids", []) for line in lines), output
    assert any(line["msg"] == "ingest stopped" for line in lines), output
    assert KEY not in output


# -- NATS going away and coming back (a private nats-server this test may stop) -----------------


def _start_nats(port: int, store: Path) -> subprocess.Popen[bytes]:
    binary = Path(sys.executable).parent / "nats-server"
    process = subprocess.Popen(
        [str(binary), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"private nats-server did not start on port {port}")


@pytest.mark.slow
async def test_nats_outage_is_503_then_recovers_with_duplicates(tmp_path: Path) -> None:
    port = _free_port()
    server = _start_nats(port, tmp_path)
    url = f"nats://127.0.0.1:{port}"
    try:
        program = make_program()
        nc = await nats.connect(url)
        await ensure_stream(nc.jetstream(), ProgramNames(program.name), max_age=timedelta(days=1))
        await nc.close()
        batch = {"events": [event(f"o-{i}") for i in range(10)]}
        app = create_app(program, url, [hash_api_key(KEY)])
        async with running(app) as http:
            assert (await http.post("/v1/events", json=batch, headers=AUTH)).json()["accepted"] == 10

            server.terminate()
            server.wait(timeout=10)
            started = time.perf_counter()
            down = await http.post("/v1/events", json=batch, headers=AUTH)
            assert down.status_code == 503 and "Retry-After" in down.headers
            assert time.perf_counter() - started < 3
            assert (await http.get("/readyz")).status_code == 503

            server = _start_nats(port, tmp_path)  # same store: the stream and its ids survive
            for _ in range(200):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            again = await http.post("/v1/events", json=batch, headers=AUTH)
            assert again.status_code == 202, again.text
            assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 10)
    finally:
        server.terminate()
        server.wait(timeout=10)
