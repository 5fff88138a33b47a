"""The user's messages still held in the program's JetStream stream: find them, delete them.

The stream keeps events for `retention.eventsMaxAge` after they are scored (limits retention,
for replay), and dead letters just as long, so an erasure must remove them there too. Subjects
carry the event type, not the user, so every message of the stream is read once (an ephemeral,
unacknowledged consumer on all the program's subjects: events and dead letters) and those whose
JSON body names the user are deleted with the stream's message-delete API. That API, without
`no_erase`, overwrites the message on disk before removing it.

A message whose body is not JSON (dead-lettered as such) cannot be attributed to anyone; it
expires with the stream's max age. Messages published after the scan started are not read:
the scorer already ignores an erased user's new events, and a second erasure removes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import nats
import orjson
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from gamify.naming import ProgramNames

FETCH_BATCH = 1000
FETCH_TIMEOUT = 2.0
CONNECT_TIMEOUT = 5.0
DELETES_AT_ONCE = 64
# An interrupted scan leaves its consumer behind; the server removes it after this idle time.
CONSUMER_IDLE_SECONDS = 60.0

Progress = Callable[[int, int], None]  # (messages read, messages to read)


@dataclass(frozen=True)
class StreamErased:
    scanned: int
    deleted: int


def _names_user(data: bytes, user: str, needle: bytes) -> bool:
    if needle not in data:  # most messages: no JSON parsing at all
        return False
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("user") == user


async def _matching_sequences(
    nc: Client, names: ProgramNames, user: str, progress: Progress | None
) -> tuple[int, list[int]]:
    js = nc.jetstream()
    try:
        info = await js.stream_info(names.stream)
    except NotFoundError:
        return 0, []
    last, total = info.state.last_seq, info.state.messages
    if total == 0:
        return 0, []
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=CONSUMER_IDLE_SECONDS,
        mem_storage=True,
        description=f"gamify erasure scan for {names.program}",
    )
    subscription = await js.pull_subscribe(names.subjects, stream=names.stream, config=config)
    needle = orjson.dumps(user)  # the id as it appears in JSON, quotes included
    matched: list[int] = []
    scanned = 0
    try:
        while True:
            try:
                messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT)
            except NatsTimeout:
                break  # nothing more to read
            done = False
            for msg in messages:
                meta = msg.metadata
                scanned += 1
                if _names_user(msg.data, user, needle):
                    matched.append(meta.sequence.stream)
                done = meta.num_pending == 0 or meta.sequence.stream >= last
            if progress is not None:
                progress(scanned, max(total, scanned))
            if done:
                break
    finally:
        await subscription.unsubscribe()
        if config.name:  # pull_subscribe names the ephemeral consumer in `config`
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(names.stream, config.name)
    return scanned, matched


async def erase_from_stream(
    nats_url: str, program: str, user: str, progress: Progress | None = None
) -> StreamErased:
    """Delete every message of `user` from `program`'s stream (events and dead letters)."""
    names = ProgramNames(program)
    nc = await nats.connect(nats_url, connect_timeout=CONNECT_TIMEOUT, max_reconnect_attempts=2)
    try:
        scanned, sequences = await _matching_sequences(nc, names, user, progress)
        js = nc.jetstream()
        deleted = 0
        for start in range(0, len(sequences), DELETES_AT_ONCE):
            chunk = sequences[start : start + DELETES_AT_ONCE]
            results = await asyncio.gather(
                *(js.delete_msg(names.stream, seq) for seq in chunk), return_exceptions=True
            )
            for result in results:
                if isinstance(result, NotFoundError):
                    continue  # expired or deleted meanwhile: gone either way
                if isinstance(result, BaseException):
                    raise result
                deleted += 1
        return StreamErased(scanned=scanned, deleted=deleted)
    finally:
        await nc.close()
