"""The user's messages still held in the program's JetStream stream: find them, delete them.

The stream keeps events for `retention.eventsMaxAge` after they are scored (limits retention,
for replay), and dead letters just as long, so an erasure must remove them there too. Subjects
carry the event type, not the user, so every message of the stream is read once
(`gamify.stream_scan`, on all the program's subjects: events and dead letters) and those whose
JSON body names the user are deleted with the stream's message-delete API. That API, without
`no_erase`, overwrites the message on disk before removing it.

A message whose body is not JSON (dead-lettered as such) cannot be attributed to anyone; it
expires with the stream's max age. Messages published after the scan started are not read:
the scorer already ignores an erased user's new events, and a second erasure removes them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from gamify.naming import ProgramNames
from gamify.stream_scan import Progress, connect, scan_stream

DELETES_AT_ONCE = 64


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
    needle = orjson.dumps(user)  # the id as it appears in JSON, quotes included
    matched: list[int] = []

    def visit(msg: Msg) -> None:
        if _names_user(msg.data, user, needle):
            matched.append(msg.metadata.sequence.stream)

    scanned = await scan_stream(
        nc.jetstream(),
        names.stream,
        names.subjects,
        visit,
        description=f"gamify erasure scan for {names.program}",
        progress=progress,
    )
    return scanned, matched


async def erase_from_stream(
    nats_url: str, program: str, user: str, progress: Progress | None = None
) -> StreamErased:
    """Delete every message of `user` from `program`'s stream (events and dead letters)."""
    names = ProgramNames(program)
    nc = await connect(nats_url)
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
