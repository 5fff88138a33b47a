"""Slow clients against the real `python -m gamify.ingest` (uvicorn): they are cut off in time.

The process runs with short deadlines (headers 1 s, body 2 s) so each case takes seconds. Raw
sockets play the clients: one that connects and says nothing, one that sends its headers a byte
at a time, one that sends headers then trickles its body, and ones that keep trickling a body
after the server already answered. Each connection must be closed by the server, its file
descriptor freed, nothing of the request stored, and the server must go on serving others.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.hostile.conftest import KEY, IngestProcess, ingest_process, stream_count
from tests.integration.test_ingest import event

HEADERS_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
MARGIN = 5.0  # the server's own body deadline is the app's plus this (gamify.ingest.server)


@pytest.fixture(scope="module")
def slow_ingest(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestProcess]:
    env = {
        "GAMIFY_INGEST_HEADERS_TIMEOUT": str(HEADERS_TIMEOUT),
        "GAMIFY_INGEST_BODY_TIMEOUT": str(BODY_TIMEOUT),
    }
    with ingest_process(nats_url, tmp_path_factory.mktemp("slow"), env=env) as ingest:
        yield ingest


def connect(ingest: IngestProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", ingest.port), timeout=5)
    sock.settimeout(0.2)
    return sock


def headers(length: int, *, auth: bool = True) -> bytes:
    lines = [
        "POST /v1/events HTTP/1.1",
        "Host: ingest",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if auth:
        lines.append(f"Authorization: Bearer {KEY}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Trickler(threading.Thread):
    """Sends `data` one byte every `interval` seconds until done or the server closes."""

    def __init__(self, sock: socket.socket, data: bytes, interval: float = 0.2):
        super().__init__(daemon=True)
        self.sock, self.data, self.interval = sock, data, interval
        self.sent = 0

    def run(self) -> None:
        for byte in self.data:
            try:
                self.sock.send(bytes([byte]))
            except OSError:
                return
            self.sent += 1
            time.sleep(self.interval)


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float | None]:
    """Everything the server sends, and after how many seconds it closed (None: still open)."""
    started = time.monotonic()
    received = b""
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received, time.monotonic() - started
        if not chunk:
            return received, time.monotonic() - started
        received += chunk
    return received, None


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def open_fds(ingest: IngestProcess) -> int:
    return len(os.listdir(f"/proc/{ingest.process.pid}/fd"))


def test_silent_connection_is_closed_with_408(slow_ingest: IngestProcess) -> None:
    sock = connect(slow_ingest)
    answer, closed_after = read_until_closed(sock, HEADERS_TIMEOUT + 5)
    sock.close()
    assert closed_after is not None, "a connection that never sent anything is still open"
    assert HEADERS_TIMEOUT - 0.2 <= closed_after <= HEADERS_TIMEOUT + 2
    assert status_of(answer) == 408 and b"request_timeout" in answer


def test_headers_sent_a_byte_at_a_time_are_cut_off(slow_ingest: IngestProcess) -> None:
    sock = connect(slow_ingest)
    trickler = Trickler(sock, headers(100), interval=0.1)  # ~12 s of headers if let through
    trickler.start()
    answer, closed_after = read_until_closed(sock, HEADERS_TIMEOUT + 5)
    sock.close()
    assert closed_after is not None and closed_after <= HEADERS_TIMEOUT + 2, closed_after
    assert status_of(answer) == 408
    assert trickler.sent < len(headers(100))


def test_trickled_body_gets_the_apps_408_and_the_connection_is_closed(
    slow_ingest: IngestProcess, nats_url: str
) -> None:
    before = asyncio.run(stream_count(nats_url, slow_ingest.program))
    body = orjson.dumps(event("slow-body-1"))
    sock = connect(slow_ingest)
    sock.sendall(headers(len(body)))
    trickler = Trickler(sock, body, interval=0.2)  # needs ~len(body)/5 seconds: far too slow
    trickler.start()
    answer, closed_after = read_until_closed(sock, BODY_TIMEOUT + MARGIN + 3)
    sock.close()
    assert status_of(answer) == 408, answer[:200]
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert orjson.loads(payload)["error"] == "request_timeout"
    assert closed_after is not None and closed_after <= BODY_TIMEOUT + 1.5, closed_after
    assert trickler.sent < len(body)
    # Nothing of the slow request is stored.
    assert asyncio.run(stream_count(nats_url, slow_ingest.program)) == before


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (headers(100_000, auth=False), 401),  # answered before the body is read
        (headers(5 * 1024 * 1024), 413),  # declared too large: answered at once
    ],
    ids=["401-then-trickle", "413-then-trickle"],
)
def test_trickling_after_an_early_answer_is_cut_off(
    slow_ingest: IngestProcess, request_head: bytes, status: int
) -> None:
    sock = connect(slow_ingest)
    sock.sendall(request_head)
    trickler = Trickler(sock, b" " * 200, interval=0.1)  # keeps the connection busy for ~20 s
    trickler.start()
    answer, closed_after = read_until_closed(sock, BODY_TIMEOUT + MARGIN + 5)
    sock.close()
    assert status_of(answer) == status, answer[:200]
    assert closed_after is not None, "the server kept reading a body it had already answered"
    assert closed_after <= BODY_TIMEOUT + MARGIN + 2, closed_after


def test_many_slow_clients_are_freed_and_others_are_served(slow_ingest: IngestProcess) -> None:
    import httpx

    baseline = open_fds(slow_ingest)
    socks = [connect(slow_ingest) for _ in range(50)]
    for index, sock in enumerate(socks):
        if index % 2:
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: in")  # half a request line
    time.sleep(0.3)
    assert open_fds(slow_ingest) >= baseline + 50  # the server holds them all, for now
    # Meanwhile a well-behaved client is served.
    ok = httpx.post(
        f"{slow_ingest.base_url}/v1/events",
        json=event("slow-many-ok"),
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )
    assert ok.status_code == 202 and ok.json()["accepted"] == 1
    deadline = time.monotonic() + HEADERS_TIMEOUT + 5
    while time.monotonic() < deadline and open_fds(slow_ingest) > baseline + 2:
        time.sleep(0.2)
    for sock in socks:
        sock.close()
    assert open_fds(slow_ingest) <= baseline + 2, "slow connections were not freed"
    assert slow_ingest.alive()
