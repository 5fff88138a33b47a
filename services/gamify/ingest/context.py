"""Per-request context as plain ASGI middleware: a request id, one log line, one metric sample.

Plain ASGI (not BaseHTTPMiddleware) so the request body keeps streaming to the handler.
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gamify.ingest.metrics import IngestMetrics
from gamify.logs import FieldLogger

REQUEST_ID_HEADER = "X-Request-Id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-Id when it is sane (so its logs and ours share it), else a new one."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _CLIENT_REQUEST_ID.match(text):
                return text
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: IngestMetrics, log: FieldLogger, routes: frozenset[str]):
        self.app = app
        self.metrics = metrics
        self.log = log
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope.get("path", "")
            # Unknown paths share one label: scanners must not blow up the metric's cardinality.
            route = path if path in self.routes else "other"
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            level = "debug" if route in _QUIET_ROUTES and status < 500 else "info"
            getattr(self.log, level)(
                "request",
                request_id=request_id,
                method=scope.get("method"),
                path=path[:200],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
