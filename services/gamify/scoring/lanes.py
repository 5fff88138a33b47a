"""Scoring lanes as processes: each lane scores its share of a batch in its own interpreter.

Why processes: a lane spends half its time in Python (rules, building rows, reading results)
and half waiting for MariaDB. As threads of one process, the lanes' Python ran one at a time
(the GIL) and each statement's answer waited for the GIL too: two thread lanes scored barely
more than one (measured: lanes busy 95% of the time, a third of it waiting for the GIL).
As processes, one lane's Python runs while the other's statements run in MariaDB.

The worker's main process keeps NATS (fetch, split by user, ack, dead letters); a lane process
gets the validated events of its part, scores them in one transaction on its own
database connection, logs its decisions, and answers with the batch's counts. A lane process
never outlives the worker (it is killed with its parent) and ignores Ctrl-C (SIGINT reaches a
whole process group): the worker finishes the batch in hand, then closes its lanes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any

from gamify.events import EventRecord, StreamEvent
from gamify.logs import configure_logging, get_logger
from gamify.program import Program
from gamify.rules.engine import RulesEngine
from gamify.scoring.store import BatchResult, create_scoring_engine, describe_error, is_transient, score_batch

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Scoring a batch makes ~100,000 short-lived objects. With the collector's defaults (a young
# collection every 700 allocations, old ones scanning the whole start-up heap) the worker spent
# ~10% more CPU per event (measured with `make bench`, A/B in one session).
GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Fewer collections, and none of them scanning what start-up loaded (frozen)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class LaneFailure(Exception):
    """A batch a lane could not score; `transient` when the database was the cause (see
    `store.is_transient`). Carries text, not the original exception: it crosses processes."""

    def __init__(self, description: str, transient: bool) -> None:
        super().__init__(description, transient)
        self.description = description
        self.transient = transient

    def __str__(self) -> str:
        return self.description


class LanesBroken(RuntimeError):
    """A lane process died (killed, out of memory): the worker cannot go on and must restart;
    the messages it held are redelivered."""


# -- inside a lane process ----------------------------------------------------------------------

_lane: dict[str, Any] = {}


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when the worker that started it dies (even by SIGKILL);
    exit now if it already died while this process was starting."""
    # Not Linux: no such call; the pool's closed pipes still end the process after a while.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _start_lane(parent: int, program: Program, database_url: str, log_level: int) -> None:
    _die_with_parent(parent)
    # Ctrl-C in a terminal reaches the whole process group: only the worker decides when its
    # lanes stop (after the batch in hand). SIGTERM keeps its default: the pool uses it to end
    # the other lanes when one died.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(logging.getLevelName(log_level), service="scoring")
    _lane["engine"] = create_scoring_engine(database_url)
    _lane["rules"] = RulesEngine(program.spec)
    _lane["log"] = get_logger("gamify.scoring.worker", program=program.name)
    tune_gc()


def _ready() -> bool:
    return True


def _score_in_lane(part: Sequence[tuple[tuple[Any, ...], int]]) -> BatchResult:
    """Score one part: (EventRecord fields, stream sequence) pairs the worker validated."""
    events = [(EventRecord._make(fields), seq) for fields, seq in part]
    try:
        result = score_batch(_lane["engine"], _lane["rules"], events)
    except Exception as exc:
        raise LaneFailure(describe_error(exc), is_transient(exc)) from None
    _log_decisions(_lane["log"], result)
    # The outcomes were logged here; the worker needs only the counts and ids.
    return replace(result, outcomes=[])


def _log_decisions(log: Any, result: BatchResult) -> None:
    """One debug line per event decided: followed end to end by its event id."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    for duplicate in result.duplicates:
        log.debug("duplicate event skipped", event_id=duplicate)
    for erased in result.erased:
        log.debug("event of an erased user skipped", event_id=erased)
    for outcome in result.outcomes:
        redemption = outcome.redemption
        log.debug(
            "event scored",
            event_id=outcome.event_id,
            user=outcome.user,
            points=outcome.points,
            rules=[award.rule_id for award in outcome.awards],
            badges=outcome.badges,
            redemption=None if redemption is None else redemption.status,
            reason=None if redemption is None else redemption.reason,
        )


# -- in the worker ------------------------------------------------------------------------------


class LaneProcesses:
    """`count` lane processes of one program; `score` runs one part in whichever is free (the
    worker never has more parts in flight than lanes, and never two parts of one lane)."""

    def __init__(self, program: Program, database_url: str, count: int) -> None:
        self.count = count
        self._pool = ProcessPoolExecutor(
            max_workers=count,
            # A fresh interpreter: forking a process that runs threads and an event loop is unsafe.
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_lane,
            initargs=(os.getpid(), program, database_url, logging.getLogger().getEffectiveLevel()),
        )

    async def start(self) -> None:
        """Start every lane now (from this thread: a lane dies with the thread that made it).
        Called again while idle, it checks that every lane is still there (raises LanesBroken)."""
        loop = asyncio.get_running_loop()
        started = [loop.run_in_executor(self._pool, _ready) for _ in range(self.count)]
        await self._run(asyncio.gather(*started))

    async def score(self, events: Sequence[tuple[StreamEvent, int]]) -> BatchResult:
        """Score (event, stream sequence) pairs in a lane; raises LaneFailure."""
        loop = asyncio.get_running_loop()
        # Plain tuples: the cheapest to pickle (the lane does not validate them again).
        part = [(tuple(event.record()), seq) for event, seq in events]
        work = loop.run_in_executor(self._pool, _score_in_lane, part)
        result: BatchResult = await self._run(work)
        return result

    @staticmethod
    async def _run(work: Any) -> Any:
        try:
            return await work
        except BrokenProcessPool as exc:
            raise LanesBroken(f"a scoring lane process died: {exc}") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
