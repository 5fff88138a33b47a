"""The reliability load client against a scripted HTTP server on a real socket: it must retry a
batch unchanged (same ids) after 503 + Retry-After and after a dropped connection, and keep an
exact record of each event's final answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
from reliability.client import LoadClient, Outcome

Reply = Callable[[dict], bytes | None]  # None: close the connection without an answer


def http(status: int, body: dict | None = None, headers: dict[str, str] | None = None) -> bytes:
    payload = orjson.dumps(body or {})
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(payload)}", "Content-Type: application/json"]
    head += [f"{key}: {value}" for key, value in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


@dataclass
class Scripted:
    """Answers request n with replies[n] (the last reply repeats); records bodies and times."""

    replies: list[Reply]
    bodies: list[dict] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = orjson.loads(await reader.readexactly(length))
                self.bodies.append(body)
                self.times.append(time.monotonic())
                reply = self.replies[min(len(self.bodies) - 1, len(self.replies) - 1)](body)
                if reply is None:
                    writer.transport.abort()  # a crash as the client sees it: reset, no answer
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@asynccontextmanager
async def scripted(*replies: Reply) -> AsyncIterator[Scripted]:
    server = Scripted(list(replies))
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        listener.close()


def events(n: int) -> list[dict]:
    return [
        {"id": f"e-{n}-{i}", "type": "t.x", "user": "u", "occurredAt": "2027-01-01T00:00:00Z"}
        for i in range(3)
    ]


def accepted(body: dict) -> bytes:
    return http(202, {"accepted": len(body["events"]), "duplicates": 0, "rejected": [], "requestId": "r"})


def client_for(url: str, batches: int = 1, **kwargs) -> LoadClient:
    return LoadClient(url, "key", events, rate=1000, batch=3, max_batches=batches, **kwargs)


async def test_503_is_retried_after_retry_after_with_the_same_ids() -> None:
    unavailable = http(503, {"error": "stream_unavailable"}, {"Retry-After": "1"})
    async with scripted(lambda body: unavailable, accepted) as server:
        client = client_for(server.url)
        await client.run(asyncio.Event())
    assert len(server.bodies) == 2
    assert server.bodies[0] == server.bodies[1]  # unchanged: same ids, same content
    assert server.times[1] - server.times[0] >= 0.95  # Retry-After honoured
    assert {record.outcome for record in client.records.values()} == {Outcome.ACCEPTED}
    assert client.stored_ids() == {"e-0-0", "e-0-1", "e-0-2"}
    summary = client.summary()
    assert (summary.sent, summary.accepted, summary.retries, summary.statuses) == (
        3,
        3,
        1,
        {"202": 1, "503": 1},
    )


async def test_a_dropped_connection_is_retried_and_a_duplicate_answer_counts_as_stored() -> None:
    duplicate = http(202, {"accepted": 0, "duplicates": 3, "rejected": [], "requestId": "r"})
    async with scripted(lambda body: None, lambda body: duplicate) as server:
        client = client_for(server.url)
        await client.run(asyncio.Event())
    assert len(server.bodies) == 2 and server.bodies[0] == server.bodies[1]
    assert {record.outcome for record in client.records.values()} == {Outcome.DUPLICATE}
    assert len(client.stored_ids()) == 3
    assert client.summary().statuses == {"0": 1, "202": 1}


async def test_rejected_ids_and_mixed_answers_are_recorded_per_event() -> None:
    mixed = http(
        202,
        {"accepted": 1, "duplicates": 1, "rejected": [{"id": "e-0-2", "reason": "bad"}], "requestId": "r"},
    )
    async with scripted(lambda body: mixed) as server:
        client = client_for(server.url)
        await client.run(asyncio.Event())
    outcomes = {event_id: record.outcome for event_id, record in client.records.items()}
    assert outcomes == {"e-0-0": Outcome.STORED, "e-0-1": Outcome.STORED, "e-0-2": Outcome.REJECTED}
    assert client.stored_ids() == {"e-0-0", "e-0-1"}


async def test_a_final_error_is_not_retried_and_giving_up_is_recorded() -> None:
    async with scripted(lambda body: http(400, {"error": "bad"})) as server:
        client = client_for(server.url)
        await client.run(asyncio.Event())
    assert len(server.bodies) == 1
    assert {record.outcome for record in client.records.values()} == {Outcome.FAILED}
    unavailable = http(503, {}, {"Retry-After": "1"})
    async with scripted(lambda body: unavailable) as server:
        client = client_for(server.url, give_up_after=0.5)
        await client.run(asyncio.Event())
    assert {record.outcome for record in client.records.values()} == {Outcome.UNRESOLVED}
    assert client.summary().unresolved == 3 and not client.stored_ids()


async def test_batches_go_out_at_the_steady_rate_until_stopped() -> None:
    async with scripted(accepted) as server:
        client = LoadClient(server.url, "key", events, rate=30, batch=3)  # 10 batches per second
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await asyncio.sleep(1.05)
        stop.set()
        await task
    assert 10 <= len(server.bodies) <= 12
    assert client.summary().sent == 3 * len(server.bodies)
    assert len({event["id"] for body in server.bodies for event in body["events"]}) == client.summary().sent
