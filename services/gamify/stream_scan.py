"""Read every message of a program's stream on one subject filter, once, without acknowledging.

For the tools that look back into the stream (erasure, dead letters), never for scoring: an
ephemeral consumer with no acks, in memory, deleted when the scan ends (or by the server after
a minute idle if the scan is interrupted), so the scoring durable is untouched. The scan stops
at the stream's last message at its start: messages published meanwhile are not read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

FETCH_BATCH = 1000
FETCH_TIMEOUT = 2.0
# An interrupted scan leaves its consumer behind; the server removes it after this idle time.
CONSUMER_IDLE_SECONDS = 60.0

CONNECT_TIMEOUT = 5.0
# What reaching or reading a stream can raise: refused, unauthorised, timed out, no stream.
NATS_FAILURES = (OSError, TimeoutError, nats.errors.Error)

Progress = Callable[[int, int], None]  # (messages read, messages to read)


async def _quiet(exc: Exception) -> None:
    """nats-py prints a traceback per failed attempt unless told otherwise: the caller reports."""


async def connect(nats_url: str) -> Client:
    """A short-lived connection for a tool: one server, a few attempts, no tracebacks printed."""
    return await nats.connect(
        nats_url, connect_timeout=CONNECT_TIMEOUT, max_reconnect_attempts=2, error_cb=_quiet
    )


async def count_on(js: JetStreamContext, stream: str, subject_filter: str) -> tuple[int, int] | None:
    """(messages of `stream` on `subject_filter`, the stream's last sequence); None when the
    stream does not exist."""
    try:
        info = await js.stream_info(stream, subjects_filter=subject_filter)
    except NotFoundError:
        return None
    return sum((info.state.subjects or {}).values()), info.state.last_seq


async def scan_stream(
    js: JetStreamContext,
    stream: str,
    subject_filter: str,
    visit: Callable[[Msg], None],
    *,
    description: str,
    progress: Progress | None = None,
) -> int:
    """Call `visit` with each message of `stream` on `subject_filter`, oldest first; return how
    many were read (0 when the stream does not exist)."""
    counted = await count_on(js, stream, subject_filter)
    if counted is None or counted[0] == 0:
        return 0
    total, last = counted
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=CONSUMER_IDLE_SECONDS,
        mem_storage=True,
        description=description,
    )
    subscription = await js.pull_subscribe(subject_filter, stream=stream, config=config)
    scanned = 0
    try:
        done = False
        while not done:
            try:
                messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT)
            except NatsTimeout:
                break  # nothing more to read
            for msg in messages:
                meta = msg.metadata
                scanned += 1
                visit(msg)
                done = meta.num_pending == 0 or meta.sequence.stream >= last
            if progress is not None:
                progress(scanned, max(total, scanned))
    finally:
        await subscription.unsubscribe()
        if config.name:  # pull_subscribe names the ephemeral consumer in `config`
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(stream, config.name)
    return scanned
