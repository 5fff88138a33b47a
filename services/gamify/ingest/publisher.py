"""Publishing events to the program's JetStream stream, one NATS connection per process.

An event counts as accepted only once JetStream has acknowledged it (PubAck). Each message
carries `Nats-Msg-Id: <event id>`, so the stream itself drops retries inside its duplicate
window and says so (`PubAck.duplicate`).

Starting never blocks on NATS: the connection is made in the background and retried until it
succeeds; after that nats-py reconnects by itself. While NATS is away, publishing fails fast
with `StreamUnavailable` (the API answers 503 and the client retries with the same ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import PubAck

from gamify.events import StreamEvent
from gamify.logs import FieldLogger, get_logger
from gamify.naming import ProgramNames
from gamify.nats_login import INGEST, NatsLogin
from gamify.settings import without_login

MSG_ID_HEADER = "Nats-Msg-Id"
DEFAULT_PUBLISH_TIMEOUT = 2.0
CONNECT_TIMEOUT = 2
MAX_CONNECT_BACKOFF = 5.0
STREAM_CHECK_TIMEOUT = 1.0
# Bounds the acks one process waits for at once (many concurrent batches of 500).
MAX_IN_FLIGHT = 4096


class StreamUnavailable(Exception):
    """The stream cannot take events now; nothing of this publish may be claimed as stored."""


@dataclass(frozen=True)
class Published:
    event_id: str
    seq: int
    duplicate: bool


class EventPublisher:
    def __init__(
        self,
        nats_url: str,
        names: ProgramNames,
        *,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        log: FieldLogger | None = None,
        login: NatsLogin | None = None,
    ):
        self.nats_url = nats_url
        self.names = names
        # The program's ingest user (none on a server without users); replies to its own inbox.
        self.login = login or NatsLogin.for_workload(names, INGEST)
        self.publish_timeout = publish_timeout
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closing = False
        self._log = log or get_logger(__name__, program=names.program)

    # -- connection ---------------------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting in the background (returns at once)."""
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect_until_done(), name="nats-connect")

    async def _connect_until_done(self) -> None:
        backoff = 0.5
        while True:
            try:
                nc = await nats.connect(
                    self.nats_url,
                    name=f"gamify-ingest-{self.names.program}",
                    connect_timeout=CONNECT_TIMEOUT,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,  # never give up once connected
                    reconnect_time_wait=1,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    **self.login.connect_options(),
                )
            except Exception as exc:  # nats-py raises several types for "cannot connect"
                self._log.warning(
                    "NATS not reachable; retrying",
                    nats_url=without_login(self.nats_url),
                    nats_user=self.login.user,
                    error=str(exc) or type(exc).__name__,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_CONNECT_BACKOFF)
                continue
            self._nc = nc
            self._js = nc.jetstream(publish_async_max_pending=MAX_IN_FLIGHT)
            self._log.info(
                "connected to NATS",
                nats_url=without_login(self.nats_url),
                nats_user=self.login.user,
                stream=self.names.stream,
            )
            return

    async def _on_error(self, exc: Exception) -> None:
        self._log.warning("NATS connection error", error=str(exc) or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            self._log.warning("disconnected from NATS")

    async def _on_reconnected(self) -> None:
        self._log.info("reconnected to NATS")

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def stream_exists(self) -> bool:
        if not self.connected or self._js is None:
            return False
        try:
            await asyncio.wait_for(self._js.stream_info(self.names.stream), STREAM_CHECK_TIMEOUT)
        except Exception:  # not found, timeout, connection lost: all mean "not ready"
            return False
        return True

    async def close(self) -> None:
        """Stop connecting; flush and close the connection (called after in-flight requests end)."""
        self._closing = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), timeout=5)
            except Exception:
                await self._nc.close()
        self._log.info("NATS connection closed")

    # -- publishing ---------------------------------------------------------------------------

    async def publish(self, events: Sequence[StreamEvent]) -> list[Published]:
        """Publish all `events` concurrently and wait for every PubAck (in order of `events`).

        Raises StreamUnavailable when not connected, when the stream is missing, or when the acks
        do not all arrive within `publish_timeout`.
        """
        js = self._js
        if js is None or not self.connected:
            raise StreamUnavailable("not connected to NATS")
        futures: list[asyncio.Future[PubAck]] = []

        async def send_and_wait() -> list[PubAck]:
            for event in events:
                futures.append(
                    await js.publish_async(
                        self.names.event_subject(event.type),
                        event.to_bytes(),
                        headers={MSG_ID_HEADER: event.id},
                        stream=self.names.stream,  # refuse to land in any other stream
                    )
                )
            return list(await asyncio.gather(*futures))

        started = time.perf_counter()
        try:
            acks = await asyncio.wait_for(send_and_wait(), timeout=self.publish_timeout)
        except TimeoutError:
            raise StreamUnavailable(
                f"JetStream did not acknowledge within {self.publish_timeout:g}s"
            ) from None
        except nats.js.errors.NoStreamResponseError:
            raise StreamUnavailable(f"stream {self.names.stream} does not exist") from None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise StreamUnavailable(f"JetStream publish failed: {exc}") from None
        finally:
            for future in futures:
                future.cancel()  # no-op for the acknowledged ones; frees the window for the rest
        elapsed = time.perf_counter() - started
        self._log.debug("batch acknowledged", events=len(events), seconds=round(elapsed, 4))
        return [
            Published(event.id, ack.seq, bool(ack.duplicate)) for event, ack in zip(events, acks, strict=True)
        ]
