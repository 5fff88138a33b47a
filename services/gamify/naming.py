"""Every name a program owns, derived from its id (DESIGN.md, "Owned names").

For program `acme-2027`: namespace `gamify-acme-2027`, stream `GAMIFY_ACME_2027` on subjects
`gamify.acme-2027.>`, schema and MySQL user `gamify_acme_2027`, bucket prefix `acme-2027/`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MYSQL_USER_MAX = 32  # characters in a MySQL 8 user name


@dataclass(frozen=True)
class ProgramNames:
    program: str

    @property
    def namespace(self) -> str:
        return f"gamify-{self.program}"

    @property
    def stream(self) -> str:
        return "GAMIFY_" + self.program.upper().replace("-", "_")

    @property
    def subjects(self) -> str:
        return f"gamify.{self.program}.>"

    @property
    def events_subject_filter(self) -> str:
        return f"gamify.{self.program}.events.>"

    def event_subject(self, event_type: str) -> str:
        return f"gamify.{self.program}.events.{event_type}"

    def dead_letter_subject(self, event_type: str) -> str:
        return f"gamify.{self.program}.deadletter.{event_type}"

    @property
    def dead_letter_filter(self) -> str:
        return f"gamify.{self.program}.deadletter.>"

    @property
    def durable(self) -> str:
        return "scoring"

    @property
    def schema(self) -> str:
        return "gamify_" + self.program.replace("-", "_")

    @property
    def db_user(self) -> str:
        # The schema's name when it fits MySQL 8's 32-character limit on user names (MariaDB
        # allows 80); a longer one keeps its start and ends with a hash of the program id, so
        # it stays readable, unique and the same on every call.
        if len(self.schema) <= MYSQL_USER_MAX:
            return self.schema
        digest = hashlib.sha256(self.program.encode()).hexdigest()[:8]
        return f"{self.schema[: MYSQL_USER_MAX - len(digest) - 1]}_{digest}"

    @property
    def nats_user(self) -> str:
        return self.schema

    def nats_workload_user(self, workload: str) -> str:
        """The NATS user of one workload (`ingest`, `scoring`): `gamify.<program>.<workload>`.

        Dots cannot occur in a program id, so no two programs' users can collide.
        """
        return f"gamify.{self.program}.{workload}"

    def nats_inbox_prefix(self, workload: str) -> str:
        """Where one workload receives replies (PubAcks, fetched messages): its own subjects,
        so a user allowed to subscribe there sees no other program's replies. The token
        `gamify` can never be a client's default inbox id (22-character NUIDs)."""
        return f"_INBOX.gamify.{self.program}.{workload}"

    @property
    def bucket_prefix(self) -> str:
        return f"{self.program}/"
