"""Keeps the NATS server's users Secret equal to what the programs' NATS Secrets say.

`NatsUsers.sync()` is called after a program's NATS Secret is written (create, update) and after
it is deleted (program deletion), and once at start-up (so the Secret exists, with the admin,
before any program does: the NATS server cannot start without the file it includes).

Concurrency: the whole content is recomputed from a cluster-wide list of the program Secrets
each time, and written with a precondition on the resourceVersion read before the list (create
when absent). Two writers that race both list, the later write fails with 409 and retries
with a fresh read and list, so the last successful write always holds every program whose
Secret was written before it began. One lock per process spares the retries in the common case
(one operator, many programs reconciling at once).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from gamify.logs import get_logger
from gamify_operator.builders.nats_users import (
    PROGRAM_SECRETS_SELECTOR,
    admin_hash,
    program_hashes,
    users_secret,
)
from gamify_operator.config import OperatorConfig, SecretRef
from gamify_operator.kube import Kube, KubeError

log = get_logger(__name__)

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class SyncResult:
    secret: str
    programs: tuple[str, ...]
    changed: bool


class NatsUsersError(RuntimeError):
    pass


class NatsUsers:
    def __init__(self, config: OperatorConfig, kube: Kube):
        if config.nats_users_secret is None:
            raise ValueError("NATS users are off (GAMIFY_NATS_USERS_SECRET is not set)")
        self.ref: SecretRef = config.nats_users_secret
        self.admin = config.nats_admin()
        self.kube = kube
        self.lock = asyncio.Lock()

    async def sync(self) -> SyncResult:
        """Write the users Secret if it differs from what the program Secrets say."""
        async with self.lock:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    return await self._sync_once()
                except KubeError as exc:
                    if not exc.conflict or attempt == MAX_ATTEMPTS:
                        raise NatsUsersError(f"NATS users Secret {self.ref}: {exc}") from None
                    log.info("NATS users Secret written by someone else meanwhile: again", attempt=attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _sync_once(self) -> SyncResult:
        live = await self.kube.get("v1", "Secret", self.ref.name, self.ref.namespace)
        programs = program_hashes(await self.kube.list_all("v1", "Secret", PROGRAM_SECRETS_SELECTOR))
        live_data = (live or {}).get("data") or {}
        # bcrypt is slow on purpose: off the event loop.
        admin = await asyncio.to_thread(admin_hash, self.admin.password, live_data)
        desired = users_secret(self.ref.name, self.ref.namespace, self.admin.user, admin, programs)
        names = tuple(sorted(programs))
        if live is None:
            await self.kube.create(desired)  # 409 if another writer created it meanwhile
        elif live_data == desired["data"] and _labelled(live, desired):
            return SyncResult(str(self.ref), names, changed=False)
        else:
            # Only if nobody wrote since the read above (server-side apply honours it).
            desired["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
            await self.kube.apply(desired)
        log.info("NATS users Secret written", secret=str(self.ref), programs=len(names))
        return SyncResult(str(self.ref), names, changed=True)


def _labelled(live: dict[str, Any], desired: dict[str, Any]) -> bool:
    live_labels = (live.get("metadata") or {}).get("labels") or {}
    return all(live_labels.get(k) == v for k, v in desired["metadata"]["labels"].items())
