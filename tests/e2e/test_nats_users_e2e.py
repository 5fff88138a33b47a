"""End to end on a NATS that checks who connects: each program's pods sign in as its own users.

A private nats-server with authorization includes a users file kept equal to the operator's
users Secret (`tests/operator/private_nats.py`: write + SIGHUP, what the NATS chart's mount and
config reloader do in a cluster). The operator signs in as its admin; it provisions two
programs, A and B. A's ingest and scoring Deployments are resolved by `podrunner` exactly as
a kubelet would (user and password from `<program>-nats` by `secretKeyRef`, a URL without a
login) and run as local processes:
- events posted to A's ingest are published with A's ingest user, pulled and acked with A's
  scoring user, and A's snapshot shows the points computed by hand;
- A's ingest credentials cannot publish to B's subjects (the stream of B stays empty), nor read
  B's stream, and anonymous connections are refused;
- deleting B drops its users from the Secret, the server reloads, and B's login is refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from nats import connect as connect_nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NoStreamResponseError

from gamify.local import pending_events
from gamify.naming import ProgramNames
from gamify.nats_login import NatsLogin
from gamify.provisioning.nats_auth import wait_until_accepted
from gamify.settings import Servers
from gamify_operator import crd
from tests.cluster import wait_until
from tests.conftest import unique_program_id
from tests.e2e.podrunner import pod_spec_of, resolve_container
from tests.e2e.test_operator_e2e import (
    Deadline,
    Processes,
    answers_ok,
    as_json,
    first_batch,
    is_active,
    post,
    program_document,
    program_lifecycle,
    snapshot_object,
    workload_env,
)
from tests.operator.harness import (
    OperatorProcess,
    labelled_namespace,
    new_run,
    operator_env,
    program_exists,
    read_program,
)
from tests.operator.private_nats import PrivateNats

RUN = new_run("e2enats")
USERS_SECRET = "gamify-nats-users"
ADMIN_USER = "platform"
ADMIN_PASSWORD = f"adm{secrets.token_hex(12)}"
BUDGET_SECONDS = 120


@pytest.fixture
def users_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    with labelled_namespace(kube_api, "nats", RUN) as name:
        yield name


@pytest.fixture
def nats(kube_api: client.ApiClient, users_namespace: str, tmp_path: Path) -> Iterator[PrivateNats]:
    server = PrivateNats(tmp_path / "nats", ADMIN_USER, ADMIN_PASSWORD)
    server.start()
    server.follow(client.CoreV1Api(kube_api), users_namespace, USERS_SECRET)
    yield server
    server.stop()


@pytest.fixture
def operator(
    kubeconfig: str,
    nats: PrivateNats,
    users_namespace: str,
    mysql_admin_url: str,
    gcs_emulator: str,
    gcs_bucket: str,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    env = operator_env(
        kubeconfig,
        RUN,
        nats_url=nats.admin_url,
        mysql_url=mysql_admin_url,
        bucket=gcs_bucket,
        extra={
            "GAMIFY_HOME": str(tmp_path / "home"),
            "GAMIFY_NATS_USERS_SECRET": f"{users_namespace}/{USERS_SECRET}",
            "GAMIFY_WORKLOAD_ENV": workload_env(gcs_emulator),
        },
        unset=("GAMIFY_WORKLOAD_NATS_URL", "GAMIFY_NATS_AUTH_DIR"),
    )
    with OperatorProcess(env, tmp_path / "operator.log") as process:
        yield process


async def publish_refused(login: NatsLogin, url: str, subject: str) -> str:
    """Try a JetStream publish as `login`; the server's refusal as text (never an ack)."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    connection = await connect_nats(url, error_cb=on_error, allow_reconnect=False, **login.connect_options())
    try:
        try:
            ack = await connection.jetstream(timeout=2).publish(
                subject, b'{"id":"x"}', headers={"Nats-Msg-Id": "x"}
            )
        except (NatsTimeout, NoStreamResponseError, TimeoutError) as exc:
            await asyncio.sleep(0.3)  # the -ERR arrives on its own
            return "; ".join(errors) or type(exc).__name__
        raise AssertionError(f"published to {subject} as {login.user}: {ack}")
    finally:
        await connection.close()


async def stream_messages(admin_url: str, program: str) -> int:
    connection = await connect_nats(admin_url)
    try:
        info = await connection.jetstream().stream_info(ProgramNames(program).stream)
        return int(info.state.messages)
    finally:
        await connection.close()


async def refused(url: str, login: NatsLogin | None) -> bool:
    async def quiet(_: Exception) -> None:
        pass

    options = login.connect_options() if login else {}
    try:
        connection = await connect_nats(
            url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0, error_cb=quiet, **options
        )
    except Exception:  # an authorization violation (or no server) fails the connect
        return True
    await connection.close()
    return False


def test_programs_run_end_to_end_with_their_own_nats_users(
    operator: OperatorProcess,
    nats: PrivateNats,
    programs: client.CustomObjectsApi,
    kube_api: client.ApiClient,
    mysql_admin_url: str,
    gcs_client: Any,
    gcs_bucket: str,
    tmp_path: Path,
) -> None:
    deadline = Deadline(BUDGET_SECONDS)
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    a, b = unique_program_id("e2ea"), unique_program_id("e2eb")
    now = datetime.now(UTC).replace(microsecond=0)
    servers = Servers(nats_url=nats.admin_url, mysql_admin_url=mysql_admin_url, bucket=f"gs://{gcs_bucket}")
    processes = Processes(tmp_path)
    try:
        for name in (a, b):
            programs.create_cluster_custom_object(
                crd.GROUP, crd.VERSION, crd.PLURAL, program_document(name, now - timedelta(days=1), RUN)
            )
        for name in (a, b):

            def active(program: str = name) -> bool:
                return is_active(read_program(programs, program))

            deadline.wait(f"{name} Active", active, 60, lambda: operator.log()[-4000:])

        namespace = ProgramNames(a).namespace
        ingest = pod_spec_of(as_json(kube_api, apps.read_namespaced_deployment("ingest", namespace)))
        scoring = pod_spec_of(as_json(kube_api, apps.read_namespaced_deployment("scoring", namespace)))
        run_ingest = resolve_container(ingest, "ingest", namespace, core, root=tmp_path / "ingest")
        run_scoring = resolve_container(scoring, "scoring", namespace, core, root=tmp_path / "scoring")
        for command, workload in ((run_ingest, "ingest"), (run_scoring, "scoring")):
            assert command.env["GAMIFY_NATS_URL"] == nats.url  # no login in the URL
            assert command.env["GAMIFY_NATS_USER"] == f"gamify.{a}.{workload}"
            assert command.env["GAMIFY_NATS_PASSWORD"] and ADMIN_PASSWORD not in json.dumps(command.env)
        a_ingest = NatsLogin.from_env(ProgramNames(a), "ingest", run_ingest.env)

        # The users reach the server (the reloader simulation may lag the Secret by a moment).
        asyncio.run(wait_until_accepted(nats.url, a_ingest, timeout=deadline.left(15)))
        assert asyncio.run(refused(nats.url, None)), "an anonymous client was let in"

        # A's pods, as processes: events in, scored.
        processes.start("ingest", run_ingest)
        processes.start("scoring", run_scoring)
        ready_url = run_ingest.probe_url(ingest["containers"][0]["readinessProbe"])

        def ingest_ready() -> bool:
            processes.check_alive()
            return answers_ok(ready_url)

        deadline.wait("A's ingest ready", ingest_ready, 30, lambda: processes.log("ingest"))
        keys = core.read_namespaced_secret(f"{a}-api-keys", namespace).data or {}
        api_key = base64.b64decode(keys["api-key"]).decode()
        at = now - timedelta(minutes=10)
        answer = post(
            ready_url.removesuffix("/readyz"), {"events": first_batch(at)}, api_key, deadline.left(10)
        )
        assert answer.status_code == 202, answer.text
        assert (answer.json()["accepted"], answer.json()["duplicates"]) == (7, 1), answer.json()

        def drained() -> bool:
            processes.check_alive()
            return asyncio.run(pending_events(nats.admin_url, a)) == 0

        deadline.wait("A's scoring to drain", drained, 30, lambda: processes.log("scoring"))
        job_pod = pod_spec_of(
            as_json(kube_api, client.BatchV1Api(kube_api).read_namespaced_cron_job("snapshots", namespace))
        )
        run_job = resolve_container(job_pod, "snapshots", namespace, core, root=tmp_path / "snapshots")
        job = subprocess.run(
            run_job.argv,
            env=run_job.env,
            cwd=run_job.cwd,
            capture_output=True,
            text=True,
            timeout=deadline.left(60),
        )
        assert job.returncode == 0, job.stderr
        board = snapshot_object(gcs_client, f"gs://{gcs_bucket}/{a}/", "leaderboards/overall.json")
        assert [(e["user"], e["points"]) for e in board["entries"]] == [
            ("alice", 105),
            ("bob", 45),
            ("carol", 5),
        ]

        # A's ingest user cannot publish to B, nor read B's stream.
        refusal = asyncio.run(publish_refused(a_ingest, nats.url, f"gamify.{b}.events.app.checkin"))
        assert "permissions violation" in refusal.lower(), refusal
        assert asyncio.run(stream_messages(nats.admin_url, b)) == 0
        scoring_login = NatsLogin.from_env(ProgramNames(a), "scoring", run_scoring.env)
        other = NatsLogin(scoring_login.inbox_prefix, scoring_login.user, scoring_login.password)

        async def read_b() -> str:
            connection = await connect_nats(
                nats.url, allow_reconnect=False, error_cb=_ignore, **other.connect_options()
            )
            try:
                await connection.jetstream(timeout=2).stream_info(ProgramNames(b).stream)
            except Exception as exc:  # timeout: the request was refused by the server
                return type(exc).__name__
            finally:
                await connection.close()
            return "read"

        assert asyncio.run(read_b()) != "read"

        # Deleting B drops its users: the server refuses B's login after the reload.
        b_data = core.read_namespaced_secret(f"{b}-nats", ProgramNames(b).namespace).data or {}
        b_ingest = NatsLogin.for_workload(
            ProgramNames(b),
            "ingest",
            base64.b64decode(b_data["ingest-user"]).decode(),
            base64.b64decode(b_data["ingest-password"]).decode(),
        )
        assert not asyncio.run(refused(nats.url, b_ingest))
        programs.delete_cluster_custom_object(crd.GROUP, crd.VERSION, crd.PLURAL, b)
        deadline.wait(
            f"{b} deleted", lambda: not program_exists(programs, b), 30, lambda: operator.log()[-4000:]
        )
        wait_until(
            "B's login refused", lambda: asyncio.run(refused(nats.url, b_ingest)), timeout=deadline.left(15)
        )
        assert not asyncio.run(refused(nats.url, a_ingest))  # A keeps working
        processes.check_alive()
        assert not nats.errors, nats.errors
        assert ADMIN_PASSWORD not in operator.log()
    finally:
        processes.kill_all()
        for name in (a, b):
            _cleanup(programs, name, servers, f"gs://{gcs_bucket}")


async def _ignore(_: Exception) -> None:
    pass


def _cleanup(programs: client.CustomObjectsApi, name: str, servers: Servers, bucket_url: str) -> None:
    with program_lifecycle(programs, name, servers, bucket_url):
        pass
