"""Where the servers are: read once from the environment (DESIGN.md, one-machine command line)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/"


def home() -> Path:
    """The project-local state folder (`.gamify/` in the working directory by default)."""
    return Path(os.environ.get("GAMIFY_HOME", ".gamify")).absolute()


@dataclass(frozen=True)
class Servers:
    nats_url: str
    mysql_admin_url: str
    bucket: str

    @classmethod
    def from_env(cls) -> Servers:
        return cls(
            nats_url=os.environ.get("GAMIFY_NATS_URL", DEFAULT_NATS_URL),
            mysql_admin_url=os.environ.get("GAMIFY_MYSQL_URL", DEFAULT_MYSQL_URL),
            bucket=os.environ.get("GAMIFY_BUCKET", (home() / "bucket").as_uri()),
        )
