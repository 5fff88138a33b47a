"""Per-program NATS users: who may publish and subscribe where (issue 5, tenant isolation).

One account, config-file authorization. Users:
- `admin` (the platform: provisions streams and consumers), no restrictions;
- per program, one user per workload, allowed only that program's subjects:
  - ingest publishes events on `gamify.<p>.events.>` and asks for its stream's info (readiness);
  - scoring reads its stream's and durable's info, pulls from its durable, acks, and publishes
    dead letters on `gamify.<p>.deadletter.>`;
  - both receive replies only under their own inbox prefix (`_INBOX.gamify.<p>.<workload>`).
  Everything not allowed is denied: another program's subjects, stream or consumer, any
  JetStream API that creates, deletes or reads other things, other inboxes.

Passwords are random (256 bits) and stored in the server config only as bcrypt hashes, so a
leaked config file opens nothing. The plain passwords live where the program's other secrets
live (the one-machine state file, the program's Kubernetes Secret).

The one-machine mode keeps the server's users in a folder (`LocalNatsAuth`, by default
`$GAMIFY_HOME/servers/nats`, where `scripts/servers.sh` runs nats-server): `admin.password`,
a registry of the programs' hashes (`programs.json`), and the include file the server reads
(`users.conf`), regenerated on every change and followed by a config reload (SIGHUP): clients
of other programs stay connected.

`main(["init", DIR])` creates the admin password (once) and the include file;
`scripts/servers.sh` runs it before starting nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
from nats import connect as connect_nats

from gamify.credentials import generate_password
from gamify.logs import get_logger
from gamify.naming import ProgramNames
from gamify.nats_login import INGEST, SCORING, WORKLOADS, NatsLogin
from gamify.settings import NATS_ADMIN_PASSWORD_FILE as ADMIN_PASSWORD_FILE
from gamify.settings import NATS_ADMIN_USER as ADMIN_USER
from gamify.settings import nats_auth_dir

log = get_logger(__name__)

USERS_FILE = "users.conf"
REGISTRY_FILE = "programs.json"
LOCK_FILE = "users.lock"
PID_FILE = "server.pid"  # written by scripts/servers.sh
# The passwords are 256 random bits: no dictionary to try, so a low cost loses nothing and keeps
# each connect cheap for the server (it checks the hash on every connect and reconnect).
BCRYPT_ROUNDS = 8
JS_API = "$JS.API"
RELOAD_WAIT = 10.0


@dataclass(frozen=True)
class ProgramNatsCredentials:
    """The plain passwords of one program's NATS users (one per workload)."""

    program: str
    ingest_password: str = field(repr=False)
    scoring_password: str = field(repr=False)

    @classmethod
    def generate(cls, program: str) -> ProgramNatsCredentials:
        return cls(program, generate_password(), generate_password())

    def password(self, workload: str) -> str:
        if workload == INGEST:
            return self.ingest_password
        if workload == SCORING:
            return self.scoring_password
        raise ValueError(f"unknown workload {workload!r}")

    def login(self, workload: str) -> NatsLogin:
        names = ProgramNames(self.program)
        return NatsLogin.for_workload(
            names, workload, names.nats_workload_user(workload), self.password(workload)
        )

    def hashes(self) -> dict[str, str]:
        return {workload: hash_password(self.password(workload)) for workload in WORKLOADS}


def hash_password(password: str) -> str:
    """bcrypt hash in the form nats-server recognises (`$2a$`/`$2b$` prefix)."""
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")


def permissions(names: ProgramNames, workload: str) -> dict[str, dict[str, list[str]]]:
    """What one workload of one program may do; everything else is denied.

    The JetStream API subjects are the ones nats-py uses for the calls each workload makes:
    `stream_info`, `consumer_info`, `fetch` (CONSUMER.MSG.NEXT), and acks/naks/in-progress/term
    (published to the message's `$JS.ACK.<stream>.<durable>...` reply subject).
    """
    stream, durable = names.stream, names.durable
    inbox = f"{names.nats_inbox_prefix(workload)}.>"
    if workload == INGEST:
        publish = [names.events_subject_filter, f"{JS_API}.STREAM.INFO.{stream}"]
    elif workload == SCORING:
        publish = [
            f"{JS_API}.STREAM.INFO.{stream}",
            f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
            f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
            names.dead_letter_filter,
        ]
    else:
        raise ValueError(f"unknown workload {workload!r}")
    return {"publish": {"allow": publish}, "subscribe": {"allow": [inbox]}}


def user_entries(program: str, hashes: Mapping[str, str]) -> list[dict[str, Any]]:
    """The server-config entries of one program's users, from their password hashes."""
    names = ProgramNames(program)
    return [
        {
            "user": names.nats_workload_user(workload),
            "password": hashes[workload],
            "permissions": permissions(names, workload),
        }
        for workload in WORKLOADS
    ]


def render_users(
    admin_hash: str, programs: Mapping[str, Mapping[str, str]], *, admin_user: str = ADMIN_USER
) -> str:
    """The `authorization` block: the admin and every program's users, in program order.

    Written as JSON, which the NATS config format accepts as is; quoted strings are never
    expanded as `$variables`, so the `$2a$...` hashes stay literal. `admin_user`: the operator
    names its admin in its own NATS URL.
    """
    users: list[dict[str, Any]] = [{"user": admin_user, "password": admin_hash}]
    for program in sorted(programs):
        users.extend(user_entries(program, programs[program]))
    body = json.dumps({"users": users}, indent=2)
    return (
        "# Generated by gamify (gamify.provisioning.nats_auth): do not edit, it is rewritten\n"
        "# whenever a program is provisioned or deleted. Passwords are bcrypt hashes.\n"
        f"authorization {body}\n"
    )


def _write_private(path: Path, text: str) -> None:
    """Write atomically, readable by this user only (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


class NatsAuthError(RuntimeError):
    pass


class LocalNatsAuth:
    """The users of a nats-server run from a local folder (the one-machine mode)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @classmethod
    def from_env(cls) -> LocalNatsAuth | None:
        """The folder of the local server's users, if that server has users (an admin password)."""
        auth = cls(nats_auth_dir())
        return auth if auth.enabled else None

    @property
    def enabled(self) -> bool:
        return (self.directory / ADMIN_PASSWORD_FILE).is_file()

    @property
    def users_file(self) -> Path:
        return self.directory / USERS_FILE

    def admin_password(self) -> str:
        return (self.directory / ADMIN_PASSWORD_FILE).read_text().strip()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The registry, under an exclusive lock (several processes provision at once); saved
        and rendered into the include file when the block ends without error."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.directory / REGISTRY_FILE
            registry: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
            before = json.dumps(registry, sort_keys=True)
            yield registry
            if not registry.get("admin"):
                registry["admin"] = hash_password(self.admin_password())
            registry.setdefault("programs", {})
            if json.dumps(registry, sort_keys=True) != before or not self.users_file.exists():
                _write_private(path, json.dumps(registry, indent=2, sort_keys=True))
                _write_private(self.users_file, render_users(registry["admin"], registry["programs"]))

    def init(self) -> None:
        """Create the admin password (once: never replaced) and the include file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        password_file = self.directory / ADMIN_PASSWORD_FILE
        if not password_file.exists():
            with contextlib.suppress(FileExistsError):  # made by a concurrent init: keep theirs
                fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(generate_password() + "\n")
        with self._locked() as registry:
            stored = registry.get("admin")
            if stored and not bcrypt.checkpw(self.admin_password().encode(), stored.encode()):
                registry["admin"] = None  # the password file was replaced by hand: re-hash it

    def programs(self) -> list[str]:
        with self._locked() as registry:
            return sorted(registry.get("programs", {}))

    def set_program(self, credentials: ProgramNatsCredentials) -> bool:
        """Add or update a program's users; reload the server if anything changed. Returns
        whether it did (the same passwords again change nothing)."""
        with self._locked() as registry:
            programs = registry.setdefault("programs", {})
            current = programs.get(credentials.program, {})
            unchanged = set(current) == set(WORKLOADS) and all(
                bcrypt.checkpw(credentials.password(w).encode(), current[w].encode()) for w in WORKLOADS
            )
            if not unchanged:
                programs[credentials.program] = credentials.hashes()
        if not unchanged:
            self.reload()
        return not unchanged

    def remove_program(self, program: str) -> bool:
        """Remove a program's users (their connections are closed by the server on reload)."""
        with self._locked() as registry:
            removed = registry.setdefault("programs", {}).pop(program, None) is not None
        if removed:
            self.reload()
        return removed

    def server_pid(self) -> int | None:
        """The nats-server started in this folder, if it runs (checked by name: a recycled pid
        of another program is never signalled)."""
        try:
            pid = int((self.directory / PID_FILE).read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return None
        return pid if comm.startswith("nats-server") else None

    def reload(self) -> bool:
        """Ask the running server to re-read its config (SIGHUP); False when none runs (it
        reads the include file when it starts)."""
        pid = self.server_pid()
        if pid is None:
            log.info("no local nats-server to reload", directory=str(self.directory))
            return False
        os.kill(pid, signal.SIGHUP)
        log.info("nats-server config reloaded", pid=pid)
        return True


async def wait_until_accepted(nats_url: str, login: NatsLogin, timeout: float = RELOAD_WAIT) -> None:
    """Wait until the server accepts `login` (a reload takes effect shortly after the signal)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Exception | None = None

    async def expected(_: Exception) -> None:
        pass  # refusals are expected until the reload is done: no error log for each try

    while asyncio.get_running_loop().time() < deadline:
        try:
            connection = await connect_nats(
                nats_url,
                connect_timeout=2,
                allow_reconnect=False,
                error_cb=expected,
                **login.connect_options(),
            )
        except Exception as exc:  # authorization violation until the reload is done
            last = exc
            await asyncio.sleep(0.1)
            continue
        await connection.close()
        return
    raise NatsAuthError(f"NATS does not accept user {login.user} after {timeout:g}s: {last}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "init":
        print("usage: python -m gamify.provisioning.nats_auth init DIRECTORY", file=sys.stderr)
        return 2
    auth = LocalNatsAuth(argv[1])
    auth.init()
    print(f"NATS users ready in {auth.users_file} (admin password in {auth.directory / ADMIN_PASSWORD_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
