"""Private servers for one reliability run: NATS (JetStream) and MariaDB that this run may stop,
restart and kill, on free loopback ports, with all their state in a temporary folder.

They are started by the project's own `scripts/servers.sh` (GAMIFY_HOME pointed at the run's
folder, ports chosen here), so they are configured exactly as `make servers-up` configures the
developer servers. Stopping one server reads its pid file and checks the process name, the
same guard servers.sh uses, so nothing else on the machine is ever signalled; the shared
servers on 4222/3306 are never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, free_port

from gamify.settings import NATS_ADMIN_PASSWORD_FILE, NATS_ADMIN_USER, Servers, with_nats_login

SERVERS_SCRIPT = ROOT / "scripts" / "servers.sh"
# What each server runs as (/proc/<pid>/comm), to never signal a recycled pid.
COMMANDS = {"nats": "nats-server", "mariadb": "mariadbd"}
STOP_TIMEOUT = 60.0  # MariaDB flushes InnoDB on a clean shutdown


class ServerScriptError(RuntimeError):
    """scripts/servers.sh failed; the message carries its output."""


@dataclass(frozen=True)
class Ports:
    nats: int
    nats_monitor: int
    mysql: int
    gcs: int  # servers.sh also starts the GCS emulator; this suite does not use it

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port())


class PrivateServers:
    """NATS and MariaDB of this run only; `start()` brings up whatever is down."""

    def __init__(self, home: Path, ports: Ports | None = None):
        self.home = home
        self.ports = ports or Ports.free()

    @property
    def servers(self) -> Servers:
        """Signed in as the private NATS's admin (servers.sh made its password at `start()`);
        the program's processes sign in as its own users, as in the one-machine mode."""
        auth_dir = self.home / "servers" / "nats"
        admin_password = (auth_dir / NATS_ADMIN_PASSWORD_FILE).read_text().strip()
        return Servers(
            nats_url=with_nats_login(f"nats://127.0.0.1:{self.ports.nats}", NATS_ADMIN_USER, admin_password),
            mysql_admin_url=f"mysql+pymysql://root@127.0.0.1:{self.ports.mysql}/",
            bucket=(self.home / "bucket").as_uri(),
            nats_auth_dir=str(auth_dir),
        )

    def _script(self, command: str) -> None:
        env = {
            **os.environ,
            "GAMIFY_HOME": str(self.home),
            "GAMIFY_NATS_PORT": str(self.ports.nats),
            "GAMIFY_NATS_MONITOR_PORT": str(self.ports.nats_monitor),
            "GAMIFY_MYSQL_PORT": str(self.ports.mysql),
            "GAMIFY_GCS_PORT": str(self.ports.gcs),
        }
        done = subprocess.run(
            [str(SERVERS_SCRIPT), command], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ServerScriptError(f"servers.sh {command} failed ({done.returncode}):\n{done.stderr}")

    def start(self) -> None:
        """Start every server that is not running (all of them the first time) and wait for it."""
        self._script("up")

    def close(self) -> None:
        """Stop every server this run started."""
        self._script("down")

    def pid(self, name: str) -> int | None:
        """The pid of server `name` if it runs (checked by process name), else None."""
        try:
            pid_file = self.home / "servers" / name / "server.pid"
            pid = int(pid_file.read_text().strip())
            command = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return None
        # A zombie (exited, not yet reaped by whoever adopted it) is not running.
        return pid if command.startswith(COMMANDS[name]) and _state(pid) not in ("Z", "") else None

    def stop(self, name: str, signum: int = signal.SIGTERM) -> float:
        """Send `signum` to server `name` and wait until it has exited; returns the time it took."""
        pid = self.pid(name)
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        pid_file = self.home / "servers" / name / "server.pid"
        started = time.monotonic()
        os.kill(pid, signum)
        deadline = started + STOP_TIMEOUT
        while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.05)
        # Gone (or a zombie its adoptive parent has not reaped yet): without the pid file,
        # servers.sh starts a new server instead of waiting for this one to finish starting.
        pid_file.unlink(missing_ok=True)
        return time.monotonic() - started


def _state(pid: int) -> str:
    """The process state letter (Z for a zombie nobody has reaped yet), '' when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
