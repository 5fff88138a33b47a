"""Where the servers are: read once from the environment (DESIGN.md, one-machine command line)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/"
NATS_ADMIN_USER = "admin"
NATS_ADMIN_PASSWORD_FILE = "admin.password"


def home() -> Path:
    """The project-local state folder (`.gamify/` in the working directory by default)."""
    return Path(os.environ.get("GAMIFY_HOME", ".gamify")).absolute()


def nats_auth_dir() -> Path:
    """Where the local nats-server's users are kept (gamify.provisioning.nats_auth)."""
    return Path(os.environ.get("GAMIFY_NATS_AUTH_DIR") or home() / "servers" / "nats").absolute()


def with_nats_login(url: str, user: str, password: str) -> str:
    """`url` signed in as `user`, unless it already names a user itself."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return url
    login = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{login}@{parts.netloc}"))


def without_login(url: str) -> str:
    """`url` without its user and password (to log it, or to hand it to a workload)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@dataclass(frozen=True)
class Servers:
    # May hold the NATS admin's password (see from_env): kept out of repr.
    nats_url: str = field(repr=False)
    mysql_admin_url: str
    bucket: str
    # The folder of the local nats-server's users (gamify.provisioning.nats_auth), when it has them.
    nats_auth_dir: str | None = None

    @classmethod
    def from_env(cls) -> Servers:
        """Servers from the environment. When the local nats-server has users (an admin password
        in `GAMIFY_NATS_AUTH_DIR`, default `$GAMIFY_HOME/servers/nats`), the NATS URL signs in
        as its admin, so callers connect as before; a URL with its own user wins."""
        nats_url = os.environ.get("GAMIFY_NATS_URL", DEFAULT_NATS_URL)
        auth_dir = nats_auth_dir()
        admin_password_file = auth_dir / NATS_ADMIN_PASSWORD_FILE
        # Without it the server has no users: connect anonymously, as before.
        has_users = admin_password_file.is_file()
        if has_users:
            nats_url = with_nats_login(nats_url, NATS_ADMIN_USER, admin_password_file.read_text().strip())
        return cls(
            nats_url=nats_url,
            mysql_admin_url=os.environ.get("GAMIFY_MYSQL_URL", DEFAULT_MYSQL_URL),
            bucket=os.environ.get("GAMIFY_BUCKET", (home() / "bucket").as_uri()),
            nats_auth_dir=str(auth_dir) if has_users else None,
        )
