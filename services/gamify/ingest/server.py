"""uvicorn's HTTP protocol with deadlines on slow clients (slowloris).

uvicorn only times out a keep-alive connection that idles after a response. A client that
connects and sends nothing, sends its headers a byte at a time, or keeps trickling a body the app
already answered (a 401, a 413) holds its connection, a file descriptor and a parser for ever.
Here every request must arrive in time: its headers within `headers_timeout` of the connection
(or of the request's first byte), then its whole body within `body_timeout`; otherwise the
connection is closed (with a 408 when nothing else is being answered on it).

The app has its own body deadline (408, `create_app(body_timeout=...)`); this one is a few
seconds longer, so the app's JSON answer normally wins and this only frees what the app let go.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gamify.logs import get_logger

HEADERS_TIMEOUT = 10.0  # headers are small: even a poor phone link sends them in well under that
BODY_TIMEOUT = 60.0
_MARGIN = 5.0  # leaves the app's own body deadline (with its JSON 408) time to answer first
_TIMEOUT_BODY = b'{"error":"request_timeout","message":"the request did not arrive in time"}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)

log = get_logger("gamify.ingest.server")


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes connections whose request does not arrive in time."""

    headers_timeout = HEADERS_TIMEOUT
    body_timeout = BODY_TIMEOUT + _MARGIN

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.headers_timeout, "headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.headers_timeout, "headers")

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        # A 408 only where no response is due on this connection: while headers are awaited
        # and the previous response is done. Mid-body, the request already has (or will get,
        # as a disconnect) its answer from the app: just close.
        idle = self.cycle is None or self.cycle.response_complete
        if phase == "headers" and idle:
            self.transport.write(_TIMEOUT_RESPONSE)
        log.info("slow client: connection closed", phase=phase, client=_client(self.client))
        self.transport.close()


def _client(address: tuple[str, int] | None) -> str | None:
    return f"{address[0]}:{address[1]}" if address else None


def deadline_protocol(headers_timeout: float, body_timeout: float) -> type[DeadlineHttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=...)` with these deadlines (seconds)."""
    return type(
        "IngestHttpProtocol",
        (DeadlineHttpToolsProtocol,),
        {"headers_timeout": headers_timeout, "body_timeout": body_timeout + _MARGIN},
    )
