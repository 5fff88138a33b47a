"""The program's JetStream stream and its durable scoring consumer (DESIGN.md, "Subjects and consumers").

Every function is idempotent: it creates what is missing, updates what differs, and never
deletes events (only `delete_stream`, used for `retention.onDelete: Delete`, does).
"""

from __future__ import annotations

from datetime import timedelta

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.errors import BadRequestError, NotFoundError

from gamify.naming import ProgramNames

DEFAULT_DUPLICATE_WINDOW = timedelta(hours=1)
ACK_WAIT = timedelta(seconds=30)
MAX_ACK_PENDING = 10_000
# Unlimited redeliveries: the scoring worker itself moves a message that failed N times to the
# dead-letter subject; a server-side max_deliver would drop it silently instead.
UNLIMITED_DELIVERIES = -1
_STREAM_NAME_IN_USE = 10058


def _nanos(seconds: float | None) -> int:
    return round((seconds or 0) * 1_000_000_000)


def stream_config(
    names: ProgramNames,
    max_age: timedelta,
    duplicate_window: timedelta = DEFAULT_DUPLICATE_WINDOW,
    replicas: int = 1,
) -> StreamConfig:
    """The stream a program owns: file storage, limits retention (events stay for replay until
    `max_age`), oldest events discarded first, and a duplicate window for `Nats-Msg-Id` dedupe."""
    if max_age <= timedelta(0):
        raise ValueError(f"max_age must be positive, got {max_age}")
    # The server refuses a duplicate window longer than max_age.
    window = min(duplicate_window, max_age)
    return StreamConfig(
        name=names.stream,
        description=f"gamify program {names.program}",
        subjects=[names.subjects],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=max_age.total_seconds(),
        duplicate_window=window.total_seconds(),
        num_replicas=replicas,
    )


def _stream_differs(current: StreamConfig, wanted: StreamConfig) -> bool:
    return (
        sorted(current.subjects or []) != sorted(wanted.subjects or [])
        or current.storage != wanted.storage
        or current.retention != wanted.retention
        or current.discard != wanted.discard
        or _nanos(current.max_age) != _nanos(wanted.max_age)
        or _nanos(current.duplicate_window) != _nanos(wanted.duplicate_window)
        or (current.num_replicas or 1) != (wanted.num_replicas or 1)
        or (current.description or "") != (wanted.description or "")
    )


async def ensure_stream(
    js: JetStreamContext,
    names: ProgramNames,
    max_age: timedelta,
    duplicate_window: timedelta = DEFAULT_DUPLICATE_WINDOW,
    replicas: int = 1,
) -> StreamInfo:
    """Create the program's stream, or update it in place when its config differs.

    An update keeps every stored event (shortening `max_age` does let the server expire the
    events now older than it, which is what the new retention asks for). Storage type and
    retention policy cannot be changed by the server; such a difference raises its error.
    """
    wanted = stream_config(names, max_age, duplicate_window, replicas)
    try:
        current = await js.stream_info(names.stream)
    except NotFoundError:
        try:
            return await js.add_stream(wanted)
        except BadRequestError as exc:
            # Created concurrently by someone else (another operator replica, the CLI).
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            current = await js.stream_info(names.stream)
    if not _stream_differs(current.config, wanted):
        return current
    return await js.update_stream(wanted)


def consumer_config(names: ProgramNames) -> ConsumerConfig:
    """The durable pull consumer the scoring workers share."""
    return ConsumerConfig(
        durable_name=names.durable,
        description=f"gamify scoring for {names.program}",
        filter_subject=names.events_subject_filter,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT.total_seconds(),
        max_deliver=UNLIMITED_DELIVERIES,
        max_ack_pending=MAX_ACK_PENDING,
    )


async def ensure_consumer(js: JetStreamContext, names: ProgramNames) -> ConsumerInfo:
    """Create the durable `scoring` consumer, or update the fields the server lets change
    (filter, ack wait, max deliver, max ack pending). Its position is never reset."""
    # The server treats a create with an existing durable name as create-or-update: the same
    # config returns the consumer unchanged; an updatable difference is applied in place.
    return await js.add_consumer(names.stream, consumer_config(names))


async def delete_stream(js: JetStreamContext, names: ProgramNames) -> bool:
    """Delete the stream with all its events and consumers; False when it did not exist."""
    try:
        return await js.delete_stream(names.stream)
    except NotFoundError:
        return False
