"""The operator as a process for tests on the real API server, and a test run's programs.

`OperatorProcess` runs `python -m gamify_operator --standalone` exactly as it runs in a pod, so a
test can SIGKILL and restart it; its log accumulates in one file. Each test module watches only
the programs labelled with its own run id (`GAMIFY_OPERATOR_SELECTOR`), so sessions side by side
on one control plane never touch each other's programs. `running_operator` starts one for a run
and, at the end, lets it finalize the run's programs before it stops.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from gamify.provisioning import deprovision
from gamify.settings import Servers
from gamify_operator import crd
from tests.cluster import wait_until
from tests.conftest import free_port

RUN_LABEL = "gamification.io/test-run"
ROOT = Path(__file__).resolve().parents[2]
Doc = dict[str, Any]


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def program_document(name: str, run: str, **spec: Any) -> Doc:
    """A program an hour into its 30 days, labelled for `run`'s operator; `spec` replaces fields."""
    start = datetime.now(UTC) - timedelta(hours=1)
    base: Doc = {
        "tenant": "acme",
        "displayName": "Operator test",
        "schedule": {"start": rfc3339(start), "end": rfc3339(start + timedelta(days=30))},
        "rules": [{"id": "steps", "event": "activity.steps", "points": 10}],
        "leaderboards": [{"id": "global"}],
    }
    return {
        "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
        "kind": crd.KIND,
        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
        "spec": {**base, **spec},
    }


def new_run(prefix: str) -> str:
    """A run id for one test module: the label value its operator selects."""
    return f"{prefix}-{secrets.token_hex(3)}"


class OperatorProcess:
    """`python -m gamify_operator --standalone`, restartable; its log accumulates in one file."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    def start(self) -> None:
        assert self.process is None, "already running"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gamify_operator", "--standalone", "--liveness", self.liveness_url],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        wait_until("the operator's liveness endpoint", self._alive, timeout=60, interval=0.2)

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"the operator exited with {self.process.returncode}:\n{self.log()[-4000:]}")
        try:
            with urllib.request.urlopen(self.liveness_url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final patch; whatever was in flight is cut."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def operator_env(
    kubeconfig: str,
    run: str,
    *,
    nats_url: str,
    mysql_url: str,
    bucket: str,
    log_level: str | None = None,
    extra: Mapping[str, str] | None = None,
    unset: Iterable[str] = (),
) -> dict[str, str]:
    """This process's environment plus what the operator needs to serve `run` against the given
    servers (bucket: an emulator bucket's name), with timers every second; `extra` adds
    settings, `unset` drops inherited ones."""
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "GAMIFY_NATS_URL": nats_url,
        "GAMIFY_MYSQL_URL": mysql_url,
        "GAMIFY_BUCKET": f"gs://{bucket}",
        "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
        "GAMIFY_OPERATOR_SELECTOR": f"{RUN_LABEL}={run}",
        "GAMIFY_OPERATOR_TIMER_INTERVAL": "1",
        "GAMIFY_OPERATOR_TIMER_IDLE": "0.5",
        "GAMIFY_OPERATOR_BACKOFF": "1",
        **(extra or {}),
    }
    if log_level is not None:
        env["GAMIFY_LOG_LEVEL"] = log_level
    # Kopf's default (unlimited) concurrency: a limit set for this shell must not slow the tests.
    for name in ("GAMIFY_OPERATOR_WORKER_LIMIT", *unset):
        env.pop(name, None)
    return env


@contextmanager
def running_operator(
    env: dict[str, str],
    log_path: Path,
    programs: client.CustomObjectsApi,
    run: str,
    servers: Servers,
    created: list[str],
) -> Iterator[OperatorProcess]:
    """The operator for `run`; afterwards its programs are deleted while it still runs (it owns
    their finalizers), and the stream, schema and objects of every `created` one are dropped."""
    process = OperatorProcess(env, log_path)
    process.start()
    try:
        yield process
    finally:
        release_run(programs, run, process, servers, created)


def release_run(
    programs: client.CustomObjectsApi,
    run: str,
    process: OperatorProcess,
    servers: Servers,
    created: list[str],
    timeout: float = 120,
) -> None:
    try:
        for name in run_programs(programs, run):
            delete_program(programs, name)
        # Deletion itself is asserted by the tests; here it is cleanup. A program still there
        # after `timeout` is reported (with the operator's log) and then forced out, so one slow
        # finalizer under load does not turn the whole module red.
        deadline = time.monotonic() + timeout
        while run_programs(programs, run) and time.monotonic() < deadline:
            time.sleep(0.5)
        stuck = run_programs(programs, run)
        if stuck:
            warnings.warn(
                f"programs not finalized by the operator within {timeout:.0f} s: {stuck}; operator log "
                "tail:\n" + "\n".join(process.log().splitlines()[-40:]),
                stacklevel=1,
            )
    finally:
        process.stop()
        for name in run_programs(programs, run):  # never leave an object nobody will finalize
            programs.patch_cluster_custom_object(
                crd.GROUP, crd.VERSION, crd.PLURAL, name, {"metadata": {"finalizers": None}}
            )
        for name in created:
            asyncio.run(deprovision(name, servers, servers.bucket, delete_data=True))


def run_programs(programs: client.CustomObjectsApi, run: str) -> list[str]:
    """The names of the programs labelled with `run`."""
    listed: Any = programs.list_cluster_custom_object(
        crd.GROUP, crd.VERSION, crd.PLURAL, label_selector=f"{RUN_LABEL}={run}"
    )
    return [item["metadata"]["name"] for item in listed["items"]]


def read_program(programs: client.CustomObjectsApi, name: str) -> Doc:
    found: Any = programs.get_cluster_custom_object(crd.GROUP, crd.VERSION, crd.PLURAL, name)
    return dict(found)


def program_exists(programs: client.CustomObjectsApi, name: str) -> bool:
    try:
        read_program(programs, name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def delete_program(programs: client.CustomObjectsApi, name: str) -> None:
    """Delete a program (already gone is fine: deletion is what was wanted)."""
    try:
        programs.delete_cluster_custom_object(crd.GROUP, crd.VERSION, crd.PLURAL, name)
    except ApiException as exc:
        if exc.status != 404:
            raise


@contextmanager
def labelled_namespace(kube_api: client.ApiClient, prefix: str, run: str) -> Iterator[str]:
    """A namespace of this run's own (`<prefix>-<random>`); deleted afterwards with all inside."""
    core = client.CoreV1Api(kube_api)
    name = f"{prefix}-{secrets.token_hex(4)}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={RUN_LABEL: run}))
    )
    try:
        yield name
    finally:
        core.delete_namespace(name)
