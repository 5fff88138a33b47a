"""Dead letters: their format, and how an operator reads and replays them.

The scoring worker dead-letters a message it could not score after `max_deliver` attempts (or
at once when it is not a valid event): the original body, published to
`gamify.<program>.deadletter.<type>` in the program's own stream with the headers below, then
the original is terminated. Nothing is dropped, but an accepted event sitting there has not
counted for its employee. Once the cause is fixed (a grant, a rule, a bug), `replay` puts such
events back on their original subject and deletes their dead letters:

- replayed events carry `Nats-Msg-Id: replay-<dead letter's sequence>`, so replaying the same
  dead letter twice within the stream's duplicate window stores it once; after that window the
  scorer's own guard (the `events` table's unique id) makes a second scoring a no-op;
- the dead letter is deleted only after the replayed event is stored: a crash in between
  leaves the dead letter, and the next replay is harmless for the reasons above;
- only a body that is a valid event, and only to this program's own event subjects: a body
  that is not an event would be dead-lettered again, and a forged original subject must not
  send anything into another program's stream.

Reading needs the stream API (an operator's or the admin's NATS login, not a workload's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from gamify.events import StreamEvent
from gamify.logs import get_logger
from gamify.naming import ProgramNames
from gamify.stream_scan import Progress, connect, scan_stream

# Headers of a dead letter (its body is the original message's, unchanged).
HEADER_REASON = "Gamify-Reason"
HEADER_SUBJECT = "Gamify-Original-Subject"
HEADER_SEQUENCE = "Gamify-Stream-Sequence"
HEADER_EVENT_ID = "Gamify-Event-Id"
HEADER_DELIVERIES = "Gamify-Deliveries"
MSG_ID = "Nats-Msg-Id"


log = get_logger("gamify.deadletters")


@dataclass(frozen=True)
class DeadLetter:
    sequence: int  # of the dead letter in the stream
    event_id: str
    event_type: str
    reason: str
    original_subject: str
    original_sequence: int | None
    deliveries: int | None
    dead_lettered_at: datetime | None
    event: StreamEvent | None  # None: the body is not a valid event
    body: bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "eventId": self.event_id,
            "type": self.event_type,
            "reason": self.reason,
            "originalSubject": self.original_subject,
            "originalSequence": self.original_sequence,
            "deliveries": self.deliveries,
            "deadLetteredAt": self.dead_lettered_at.isoformat() if self.dead_lettered_at else None,
            "validEvent": self.event is not None,
        }


@dataclass(frozen=True)
class Replayed:
    """What `replay` did with each dead letter it was asked about."""

    replayed: list[DeadLetter]
    not_replayable: list[tuple[DeadLetter, str]]  # with why
    not_found: list[str]  # event ids asked for that have no dead letter


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def read_dead_letter(msg: Msg, names: ProgramNames) -> DeadLetter:
    headers = msg.headers or {}
    subject = headers.get(HEADER_SUBJECT, "")
    try:
        event: StreamEvent | None = StreamEvent.from_bytes(msg.data)
    except ValidationError:
        event = None
    prefix = names.dead_letter_subject("")
    return DeadLetter(
        sequence=msg.metadata.sequence.stream,
        event_id=headers.get(HEADER_EVENT_ID) or (event.id if event is not None else ""),
        event_type=msg.subject.removeprefix(prefix),
        reason=headers.get(HEADER_REASON, ""),
        original_subject=subject,
        original_sequence=_int_or_none(headers.get(HEADER_SEQUENCE)),
        deliveries=_int_or_none(headers.get(HEADER_DELIVERIES)),
        dead_lettered_at=msg.metadata.timestamp,
        event=event,
        body=msg.data,
    )


async def _read_all(js: JetStreamContext, names: ProgramNames) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    await scan_stream(
        js,
        names.stream,
        names.dead_letter_filter,
        lambda msg: letters.append(read_dead_letter(msg, names)),
        description=f"gamify dead letters of {names.program}",
    )
    return letters


async def list_dead_letters(nats_url: str, program: str) -> list[DeadLetter]:
    """Every dead letter of `program`, oldest first."""
    nc = await connect(nats_url)
    try:
        return await _read_all(nc.jetstream(), ProgramNames(program))
    finally:
        await nc.close()


def _why_not(letter: DeadLetter, names: ProgramNames) -> str | None:
    if letter.event is None:
        return "the body is not a valid event: replaying cannot score it"
    if letter.original_subject != names.event_subject(letter.event.type):
        return f"original subject {letter.original_subject!r} is not this program's subject for its type"
    return None


async def replay(
    nats_url: str, program: str, event_ids: Iterable[str] | None = None, progress: Progress | None = None
) -> Replayed:
    """Put dead-lettered events back on their subjects (all of them, or those of `event_ids`)
    and delete their dead letters; `progress` is told (dead letters done, dead letters chosen)."""
    names = ProgramNames(program)
    wanted = None if event_ids is None else set(event_ids)
    nc = await connect(nats_url)
    try:
        js = nc.jetstream()
        letters = await _read_all(js, names)
        chosen = [letter for letter in letters if wanted is None or letter.event_id in wanted]
        found = {letter.event_id for letter in chosen}
        result = Replayed([], [], sorted((wanted or set()) - found))
        for done, letter in enumerate(chosen, start=1):
            if progress is not None:
                progress(done, len(chosen))
            why = _why_not(letter, names)
            if why is not None:
                result.not_replayable.append((letter, why))
                continue
            await js.publish(
                letter.original_subject,
                letter.body,
                headers={MSG_ID: f"replay-{letter.sequence}"},
                stream=names.stream,  # never into another stream
            )
            # Deleted meanwhile (another replay, an erasure): gone either way.
            with contextlib.suppress(NotFoundError):
                await js.delete_msg(names.stream, letter.sequence)
            result.replayed.append(letter)
            log.info(
                "dead letter replayed",
                program=program,
                event_id=letter.event_id,
                dead_letter_seq=letter.sequence,
                subject=letter.original_subject,
            )
        return result
    finally:
        await nc.close()


def run_list(nats_url: str, program: str) -> list[DeadLetter]:
    return asyncio.run(list_dead_letters(nats_url, program))


def run_replay(
    nats_url: str, program: str, event_ids: Iterable[str] | None = None, progress: Progress | None = None
) -> Replayed:
    return asyncio.run(replay(nats_url, program, event_ids, progress))
