"""How a program's workload signs in to NATS: its own user, password and inbox prefix.

Each workload (ingest, scoring) of each program has its own NATS user, allowed only that
program's subjects (see `gamify.provisioning.nats_auth`). Replies (PubAcks, fetched messages)
arrive under the workload's own inbox prefix, the only place it may subscribe.

The URL (`GAMIFY_NATS_URL`) stays free of credentials, so it can be logged; the user and
password come from `GAMIFY_NATS_USER` and `GAMIFY_NATS_PASSWORD`. Without them the workload
connects anonymously, which only a server without authorization accepts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gamify.naming import ProgramNames

ENV_USER = "GAMIFY_NATS_USER"
ENV_PASSWORD = "GAMIFY_NATS_PASSWORD"
INGEST = "ingest"
SCORING = "scoring"
WORKLOADS = (INGEST, SCORING)


@dataclass(frozen=True)
class NatsLogin:
    inbox_prefix: str
    user: str | None = None
    # Kept out of repr so a login never reaches a log line whole.
    password: str | None = field(default=None, repr=False)

    @classmethod
    def for_workload(
        cls, names: ProgramNames, workload: str, user: str | None = None, password: str | None = None
    ) -> NatsLogin:
        if workload not in WORKLOADS:
            raise ValueError(f"unknown workload {workload!r}; expected one of {', '.join(WORKLOADS)}")
        return cls(names.nats_inbox_prefix(workload), user or None, password or None)

    @classmethod
    def from_env(
        cls, names: ProgramNames, workload: str, environ: Mapping[str, str] | None = None
    ) -> NatsLogin:
        env = os.environ if environ is None else environ
        user, password = env.get(ENV_USER, ""), env.get(ENV_PASSWORD, "")
        if bool(user) != bool(password):
            raise ValueError(f"{ENV_USER} and {ENV_PASSWORD} must be set together")
        return cls.for_workload(names, workload, user, password)

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for `nats.connect`."""
        options: dict[str, Any] = {"inbox_prefix": self.inbox_prefix}
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password
        return options

    def environment(self) -> dict[str, str]:
        """The variables `from_env` reads (for the processes the one-machine mode starts)."""
        if self.user is None or self.password is None:
            return {}
        return {ENV_USER: self.user, ENV_PASSWORD: self.password}
