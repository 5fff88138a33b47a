"""The Kopf handlers of `GamificationProgram`: thin wiring, the logic is in `reconcile.py`.

- create / resume / update (of `spec`): a full reconcile (`Reconciler.reconcile`); an edit of
  `spec.schedule.end` is recorded in `status.extensions`;
- a timer: the lifecycle by the clock (Scheduled -> Active -> Ended -> closed), reconciling
  only when the dates call for a change (`Reconciler.tick`);
- delete (behind the `gamification.io/finalizer` finalizer): retention, namespace.

Handlers of one program never run at the same time in this process (one lock per program),
so the timer cannot race a change handler on the same objects.

Tunables from the environment (`config.HandlerSettings`, read at import: Kopf takes timer
intervals at registration):

=============================== ======= ==========================================================
GAMIFY_OPERATOR_TIMER_INTERVAL  30      seconds between lifecycle checks of each program
GAMIFY_OPERATOR_TIMER_IDLE      10      seconds a program must be unchanged before a check
GAMIFY_OPERATOR_SELECTOR        (none)  label selector: only programs matching it (sharding, tests)
GAMIFY_OPERATOR_DRAIN_TIMEOUT   3600    seconds the final snapshot waits for scoring to drain
GAMIFY_OPERATOR_BACKOFF         5       first retry delay (s) after a failure; doubles, max 300
GAMIFY_OPERATOR_WORKER_LIMIT    (none)  programs reconciled at once (Kopf's queueing workers)
=============================== ======= ==========================================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import kopf

from gamify.logs import get_logger
from gamify.settings import without_login
from gamify_operator.config import ConfigError, HandlerSettings, OperatorConfig
from gamify_operator.crd import GROUP, PLURAL, VERSION
from gamify_operator.kube import Kube, new_api_client
from gamify_operator.lifecycle import end_change
from gamify_operator.reconcile import EventPoster, ReconcileOptions, Reconciler, Result

FINALIZER = f"{GROUP}/finalizer"
REPORTING_COMPONENT = "gamify-operator"
T = TypeVar("T")

log = get_logger(__name__)


try:
    SETTINGS = HandlerSettings.from_env()  # at import: Kopf takes the timer's interval here
except ConfigError as exc:
    raise SystemExit(str(exc)) from None


def _now() -> datetime:
    return datetime.now(UTC)


def _poster(body: kopf.Body) -> EventPoster:
    def post(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    return post


def _lock(memo: kopf.Memo, name: str) -> asyncio.Lock:
    locks: dict[str, asyncio.Lock] = memo.locks
    return locks.setdefault(name, asyncio.Lock())


async def _locked(memo: kopf.Memo, name: str, work: Awaitable[T]) -> T:
    async with _lock(memo, name):
        return await work


def _write(patch: kopf.Patch, result: Result) -> None:
    """Status and labels go into Kopf's patch (applied even when the handler then fails)."""
    patch.status.update(result.status)
    for key, value in result.labels.items():
        patch.metadata.labels[key] = value
    if result.error is not None:
        raise result.error


def _reconciler(memo: kopf.Memo) -> Reconciler:
    reconciler: Reconciler = memo.reconciler
    return reconciler


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Kopf's own bookkeeping under our group: no `kopf.zalando.org` names on users' objects.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Events: what happened (Normal) and why something failed (Warning) on each program.
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = REPORTING_COMPONENT
    # Watches are re-opened every few minutes even when quiet, so a half-dead connection
    # (a proxy or load balancer dropping it silently) is noticed.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    # API errors: retry soon, then back off; one slow program does not hold the others.
    settings.networking.error_backoffs = (1, 2, 4, 8, 16, 32)
    settings.queueing.worker_limit = SETTINGS.worker_limit
    # A program deleted while its timer ticks (a tick reads a Secret and the stream: tens of ms)
    # keeps its finalizer until the tick ends, and Kopf looks again only every
    # `cancellation_polling` s (60 by default): a deletion then hung for a minute. Wait a little
    # for the tick, then look every 2 s.
    settings.background.instant_exit_timeout = 0.5
    settings.background.cancellation_polling = 2
    if SETTINGS.selector:
        settings.watching.label_selectors[GROUP, PLURAL] = SETTINGS.selector

    config = OperatorConfig.from_env()
    kube = Kube(new_api_client())
    await kube.prepare()
    options = ReconcileOptions(
        drain_timeout=timedelta(seconds=SETTINGS.drain_timeout),
        backoff_seconds=SETTINGS.backoff,
    )
    reconciler = Reconciler(config, kube, options)
    memo.reconciler = reconciler
    memo.locks = {}
    log.info(
        "operator configured",
        nats=without_login(config.nats_url),  # never the admin's password, even masked
        nats_users_secret=str(config.nats_users_secret) if config.nats_users_secret else None,
        bucket=config.bucket,
        selector=SETTINGS.selector,
        timer_interval=SETTINGS.timer_interval,
    )
    if reconciler.nats_users is not None:
        # The NATS server cannot start without the file it includes: write it (with the admin)
        # before any program needs it. A failure here is retried by every reconcile.
        try:
            result = await reconciler.nats_users.sync()
            log.info("NATS users Secret ready", secret=result.secret, programs=len(result.programs))
        except Exception as exc:
            log.warning("NATS users Secret not written at start-up", error=str(exc))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    reconciler = memo.get("reconciler")
    if reconciler is not None:
        reconciler.kube.api.close()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
async def reconcile_program(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    reconciler = _reconciler(memo)
    result = await _locked(
        memo, body.metadata.name, reconciler.reconcile(body, now=_now(), post=_poster(body), retry=retry)
    )
    _write(patch, result)


def _end_of(spec: Any) -> Any:
    schedule = spec.get("schedule") if isinstance(spec, Mapping) else None
    return schedule.get("end") if isinstance(schedule, Mapping) else None


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def update_program(
    body: kopf.Body, old: Any, new: Any, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    now = _now()
    extension = end_change(_end_of(old), _end_of(new), now)
    reconciler = _reconciler(memo)
    result = await _locked(
        memo,
        body.metadata.name,
        reconciler.reconcile(body, now=now, post=_poster(body), extension=extension, retry=retry),
    )
    _write(patch, result)


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.timer_interval, idle=SETTINGS.timer_idle)
async def lifecycle_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    lock = _lock(memo, body.metadata.name)
    if lock.locked():
        return  # a change handler is on it; the next tick looks again
    reconciler = _reconciler(memo)
    async with lock:
        result = await reconciler.tick(body, now=_now(), post=_poster(body))
    if result is not None:
        _write(patch, result)
    elif (body.get("status") or {}).get("phase"):
        # Outside the lock: only a look at the stream, it must not hold a change handler up.
        counted = await reconciler.dead_letters(body, post=_poster(body))
        if counted is not None:
            patch.status.update(counted)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete_program(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconciler = _reconciler(memo)
    await _locked(memo, body.metadata.name, reconciler.delete(body, post=_poster(body)))
    memo.locks.pop(body.metadata.name, None)
