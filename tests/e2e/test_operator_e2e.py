"""End to end without a kubelet: what the operator writes, run as local processes, works.

A user's `kubectl apply` of a GamificationProgram must give a working tenant. Pods cannot run
here (the control plane has no kubelet), so `podrunner` plays the kubelet's part: it reads the
ingest and scoring Deployments and the snapshot CronJob the operator created on the real API
server, resolves each container's command, args and env (Secrets and the program ConfigMap
mounted where `GAMIFY_PROGRAM_FILE` points) and runs them as processes. Nothing is taken from
anywhere else: the API key comes from the Secret, the servers from the operator's config (NATS,
MariaDB and the GCS emulator of this machine, the emulator through `GAMIFY_WORKLOAD_ENV`).

Events go in over HTTP (a duplicate and a bad one among them), scoring drains the stream, the
CronJob's container publishes a snapshot, and the JSON in the emulator bucket has the points,
ranks and redemption computed by hand below. Then the processes stop on SIGTERM (exit 0), and
the program is deleted (Retain); the test drops the stream, schema and objects itself.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from gamify.local import pending_events
from gamify.naming import ProgramNames
from gamify.provisioning import deprovision
from gamify.settings import Servers
from gamify_operator import crd
from gamify_operator.builders.labels import ChildNames
from gamify_operator.builders.secrets import API_KEY
from tests.conftest import unique_program_id
from tests.e2e.podrunner import VENV_BIN, LocalCommand, PodSpecError, pod_spec_of, resolve_container
from tests.operator.harness import (
    RUN_LABEL,
    OperatorProcess,
    delete_program,
    labelled_namespace,
    new_run,
    operator_env,
    program_exists,
    read_program,
    rfc3339,
)

RUN = new_run("e2e")
BUDGET_SECONDS = 85  # the whole scenario, operator start to cleanup
# How each process may end on SIGTERM. Scoring exits 0 by contract; uvicorn (ingest) shuts down
# gracefully, then re-raises the signal so the exit status tells why (as tests/integration does).
CLEAN_EXITS = {"ingest": (0, -signal.SIGTERM), "scoring": (0,)}
Doc = dict[str, Any]


class Deadline:
    """One time budget for the test; every wait takes at most what is left of it."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self, cap: float) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            pytest.fail(f"the end-to-end scenario ran over its {BUDGET_SECONDS}s budget")
        return min(left, cap)

    def wait(
        self,
        what: str,
        predicate: Callable[[], Any],
        cap: float,
        explain: Callable[[], str] = lambda: "",
        interval: float = 0.2,
    ) -> Any:
        until = time.monotonic() + self.left(cap)
        last: Any = None
        while time.monotonic() < until:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        pytest.fail(f"timed out waiting for {what} (last: {last!r})\n{explain()}")


class Processes:
    """The containers started locally; each killed when the test ends, however it ends."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: LocalCommand) -> subprocess.Popen[bytes]:
        self.running[name] = command.start(self.log_path(name))
        return self.running[name]

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-tail:] if path.exists() else "(no log)"

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{self.log(name)}")

    def kill_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def operator(
    kubeconfig: str,
    programs: client.CustomObjectsApi,
    nats_url: str,
    mysql_admin_url: str,
    gcs_emulator: str,
    gcs_bucket: str,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """The operator, pointed at this machine's servers, watching only this run's programs."""
    env = operator_env(
        kubeconfig,
        RUN,
        nats_url=nats_url,
        mysql_url=mysql_admin_url,
        bucket=gcs_bucket,
        extra={"GAMIFY_WORKLOAD_NATS_URL": nats_url, "GAMIFY_WORKLOAD_ENV": workload_env(gcs_emulator)},
    )
    with OperatorProcess(env, tmp_path / "operator.log") as process:
        yield process


def workload_env(gcs_emulator: str) -> str:
    """What the workloads need beyond the operator's own settings: the emulator."""
    return json.dumps({"STORAGE_EMULATOR_HOST": gcs_emulator, "GOOGLE_CLOUD_PROJECT": "test"})


@contextmanager
def program_lifecycle(
    programs: client.CustomObjectsApi, name: str, servers: Servers, bucket_url: str
) -> Iterator[None]:
    """Whatever happens, the program is gone at the end and its data dropped (`onDelete:
    Retain` keeps stream, schema and objects: this test owns that cleanup). On an early failure
    the operator still runs, so it gets the first chance to finalize (and delete the namespace)."""
    try:
        yield
    finally:
        delete_program(programs, name)
        until = time.monotonic() + 20
        while program_exists(programs, name) and time.monotonic() < until:
            time.sleep(0.2)
        if program_exists(programs, name):  # never leave an object nobody will finalize
            programs.patch_cluster_custom_object(
                crd.GROUP, crd.VERSION, crd.PLURAL, name, {"metadata": {"finalizers": None}}
            )
        asyncio.run(deprovision(name, servers, bucket_url, delete_data=True))


# --- the program and its events, with the points computed by hand -----------------------------------


def program_document(name: str, start: datetime, run: str = RUN) -> Doc:
    return {
        "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
        "kind": crd.KIND,
        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
        "spec": {
            "tenant": "acme",
            "displayName": "End to end",
            "schedule": {"start": rfc3339(start), "end": rfc3339(start + timedelta(days=31)),
                         "timezone": "UTC"},
            "mode": "both",
            "rules": [
                {"id": "steps", "event": "activity.steps", "points": 10,
                 "unit": {"property": "steps", "size": 1000}, "dailyCap": 100},
                {"id": "checkin", "event": "app.checkin", "points": 5, "oncePerUser": True},
            ],
            "rewards": [{"id": "mug", "name": "Mug", "cost": 50, "stock": 1, "perUserLimit": 1}],
            "leaderboards": [{"id": "overall", "window": "all-time", "size": 10}],
            "retention": {"onDelete": "Retain"},
        },
    }  # fmt: skip


def ev(event_id: str, event_type: str, user: str, when: datetime, **properties: Any) -> Doc:
    return {"id": event_id, "type": event_type, "user": user, "occurredAt": rfc3339(when),
            "properties": properties}  # fmt: skip


def first_batch(at: datetime) -> list[Doc]:
    """All at one instant, so the daily cap cannot straddle a midnight."""
    return [
        ev("a1", "activity.steps", "alice", at, steps=12000),  # 120 → cap 100
        ev("a2", "activity.steps", "alice", at, steps=3000),  # cap reached → 0
        ev("a3", "app.checkin", "alice", at),  # 5 → alice 105
        ev("b1", "activity.steps", "bob", at, steps=4500),  # floor(4.5) x 10 = 40
        ev("b2", "app.checkin", "bob", at),  # 5 → bob 45
        ev("c1", "app.checkin", "carol", at),  # 5
        ev("c2", "app.checkin", "carol", at),  # once per user → 0: carol 5
        ev("a1", "activity.steps", "alice", at, steps=12000),  # the same id again: a duplicate
        {"id": "bad-1", "type": "activity.steps", "occurredAt": rfc3339(at)},  # no user: rejected
    ]


def redemptions(at: datetime) -> list[Doc]:
    return [
        ev("r1", "reward.redeem", "alice", at, reward="mug"),  # 105 >= 50, stock 1 → fulfilled, balance 55
        ev("r2", "reward.redeem", "bob", at, reward="mug"),  # 45 < 50 (and no stock left) → rejected
    ]


# --- reading what the operator wrote -----------------------------------------------------------------


def is_active(body: Doc) -> bool:
    status = body.get("status") or {}
    ready = {c["type"]: c["status"] for c in status.get("conditions", [])}.get("Ready")
    return bool(
        status.get("phase") == "Active"
        and status.get("observedGeneration") == body["metadata"]["generation"]
        and ready == "True"
    )


def namespace_going(core: client.CoreV1Api, namespace: str) -> bool:
    """Deleted, or being emptied by the namespace controller."""
    try:
        metadata = core.read_namespace(namespace).metadata
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return metadata is not None and metadata.deletion_timestamp is not None


def as_json(kube_api: client.ApiClient, model: Any) -> Doc:
    """An API model in the API's own JSON shape (camelCase), as `kubectl get -o json` shows it."""
    return dict(kube_api.sanitize_for_serialization(model))


def only_container(pod_spec: Doc, name: str) -> Doc:
    """The pod is that one container: nothing else the kubelet would have to run first."""
    assert "initContainers" not in pod_spec
    assert [c["name"] for c in pod_spec["containers"]] == [name]
    return dict(pod_spec["containers"][0])


def snapshot_object(gcs_client: Any, snapshot_url: str, key: str) -> Doc:
    bucket_name, _, prefix = snapshot_url.removeprefix("gs://").partition("/")
    blob = gcs_client.bucket(bucket_name).blob(prefix + key)
    assert blob.exists(), f"{snapshot_url}{key} was not published"
    return dict(json.loads(blob.download_as_bytes()))


def post(url: str, body: Any, key: str | None, timeout: float) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/events", json=body, headers=headers, timeout=timeout)


def answers_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# --- the test ----------------------------------------------------------------------------------------


def test_a_program_applied_to_kubernetes_runs_end_to_end(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    kube_api: client.ApiClient,
    nats_url: str,
    mysql_admin_url: str,
    gcs_client: Any,
    gcs_bucket: str,
    tmp_path: Path,
) -> None:
    deadline = Deadline(BUDGET_SECONDS)
    core, apps, batch = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api), client.BatchV1Api(kube_api)
    name = unique_program_id("e2e")
    names, children = ProgramNames(name), ChildNames(name)
    namespace = names.namespace
    servers = Servers(nats_url=nats_url, mysql_admin_url=mysql_admin_url, bucket=f"gs://{gcs_bucket}")
    now = datetime.now(UTC).replace(microsecond=0)
    processes = Processes(tmp_path)

    with program_lifecycle(programs, name, servers, f"gs://{gcs_bucket}"):
        # kubectl apply
        programs.create_cluster_custom_object(
            crd.GROUP, crd.VERSION, crd.PLURAL, program_document(name, now - timedelta(days=1))
        )

        def operator_side() -> str:
            status = json.dumps(read_program(programs, name).get("status"), indent=1)
            return f"status: {status}\noperator log:\n{operator.log()[-4000:]}"

        deadline.wait(
            f"{name} Active and Ready", lambda: is_active(read_program(programs, name)), 60, operator_side
        )
        body = read_program(programs, name)
        snapshot_url = body["status"]["snapshotURL"]
        assert snapshot_url == f"gs://{gcs_bucket}/{name}/"

        # What the operator wrote, read back from the API server.
        ingest = as_json(kube_api, apps.read_namespaced_deployment("ingest", namespace))
        scoring = as_json(kube_api, apps.read_namespaced_deployment("scoring", namespace))
        cronjob = as_json(kube_api, batch.read_namespaced_cron_job("snapshots", namespace))
        assert ingest["spec"]["replicas"] >= 1 and scoring["spec"]["replicas"] >= 1
        assert cronjob["spec"]["suspend"] is False
        keys = core.read_namespaced_secret(children.api_keys_secret, namespace).data or {}
        api_key = base64.b64decode(keys[API_KEY]).decode()

        ingest_pod, scoring_pod, job_pod = pod_spec_of(ingest), pod_spec_of(scoring), pod_spec_of(cronjob)
        ingest_container = only_container(ingest_pod, "ingest")
        only_container(scoring_pod, "scoring")
        only_container(job_pod, "snapshots")
        run_ingest = resolve_container(ingest_pod, "ingest", namespace, core, root=tmp_path / "ingest")
        run_scoring = resolve_container(scoring_pod, "scoring", namespace, core, root=tmp_path / "scoring")
        run_job = resolve_container(job_pod, "snapshots", namespace, core, root=tmp_path / "snapshots")

        # The program file is the ConfigMap's, mounted where the env points; the emulator came
        # from the operator's GAMIFY_WORKLOAD_ENV, not from this process.
        for command in (run_ingest, run_scoring, run_job):
            program_file = Path(command.env["GAMIFY_PROGRAM_FILE"])
            assert program_file.is_relative_to(tmp_path), program_file
            assert yaml.safe_load(program_file.read_text())["metadata"]["name"] == name
            assert command.env["STORAGE_EMULATOR_HOST"] == os.environ["STORAGE_EMULATOR_HOST"]
            assert command.argv[0] == str(VENV_BIN / "gamify")
        assert run_ingest.argv[1:] == ["run", "ingest"] and run_scoring.argv[1:] == ["run", "scoring"]
        assert run_job.argv[1:] == ["run", "snapshots", "--once"]
        assert api_key not in run_ingest.env.values()  # ingest gets the hashes only

        try:
            processes.start("ingest", run_ingest)
            processes.start("scoring", run_scoring)
            ready_url = run_ingest.probe_url(ingest_container["readinessProbe"])
            ingest_url = ready_url.removesuffix("/readyz")

            def ingest_ready() -> bool:
                processes.check_alive()
                return answers_ok(ready_url)

            deadline.wait("ingest's readiness probe", ingest_ready, 30, lambda: processes.log("ingest"))

            # An app posts events with the key from the Secret.
            at = now - timedelta(minutes=10)
            assert post(ingest_url, {"events": first_batch(at)}, None, deadline.left(10)).status_code == 401
            answer = post(ingest_url, {"events": first_batch(at)}, api_key, deadline.left(10))
            assert answer.status_code == 202, answer.text
            counts = answer.json()
            assert (counts["accepted"], counts["duplicates"]) == (7, 1), counts
            assert [item["id"] for item in counts["rejected"]] == ["bad-1"]
            answer = post(
                ingest_url, {"events": redemptions(at + timedelta(minutes=1))}, api_key, deadline.left(10)
            )
            assert answer.status_code == 202 and answer.json()["accepted"] == 2, answer.text

            def drained() -> bool:
                processes.check_alive()
                return asyncio.run(pending_events(nats_url, name)) == 0

            deadline.wait("scoring to drain the stream", drained, 30, lambda: processes.log("scoring"))

            # One run of the CronJob's container, to completion.
            job = subprocess.run(
                run_job.argv,
                env=run_job.env,
                cwd=run_job.cwd,
                capture_output=True,
                text=True,
                timeout=deadline.left(cronjob["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]),
            )
            assert job.returncode == 0, f"snapshot job exited {job.returncode}:\n{job.stdout}\n{job.stderr}"

            # SIGTERM, as the kubelet stops a pod: both drain and exit cleanly.
            for process_name, pod in (("ingest", ingest_pod), ("scoring", scoring_pod)):
                process = processes.running[process_name]
                process.send_signal(signal.SIGTERM)
                grace = float(pod["terminationGracePeriodSeconds"])
                try:
                    code = process.wait(timeout=deadline.left(grace))
                except subprocess.TimeoutExpired:
                    pytest.fail(f"{process_name} did not stop on SIGTERM:\n{processes.log(process_name)}")
                log = processes.log(process_name, tail=1_000_000)
                assert code in CLEAN_EXITS[process_name], f"{process_name} exited {code} on SIGTERM:\n{log}"
                assert '"level":"ERROR"' not in log, f"{process_name} logged an error:\n{log}"
                assert f'"msg":"{process_name} stopped"' in log or code == 0, log
        finally:
            processes.kill_all()

        # The snapshot, as apps read it from the bucket.
        manifest = snapshot_object(gcs_client, snapshot_url, "manifest.json")
        assert manifest["program"] == name
        assert manifest["lastScoredPosition"] == 9  # 7 + 2 accepted events, the stream's last
        board = snapshot_object(gcs_client, snapshot_url, "leaderboards/overall.json")
        assert (board["board"], board["window"], board["participants"]) == ("overall", "all-time", 3)
        assert [(e["rank"], e["user"], e["points"]) for e in board["entries"]] == [
            (1, "alice", 105),
            (2, "bob", 45),
            (3, "carol", 5),
        ]
        alice = snapshot_object(gcs_client, snapshot_url, "users/alice.json")
        assert (alice["user"], alice["points"], alice["balance"], alice["ranks"]) == (
            "alice",
            105,
            55,
            {"overall": 1},
        )
        assert alice["redemptions"] == [{"id": "r1", "reward": "mug", "status": "fulfilled"}]
        bob = snapshot_object(gcs_client, snapshot_url, "users/bob.json")
        assert (bob["points"], bob["balance"], bob["ranks"]) == (45, 45, {"overall": 2})
        [bob_redemption] = bob["redemptions"]
        # Out of stock after alice's, and short of balance anyway: either reason is right.
        assert bob_redemption["status"] == "rejected"
        assert "stock" in bob_redemption["reason"] or "balance" in bob_redemption["reason"]
        catalog = snapshot_object(gcs_client, snapshot_url, "catalog.json")
        [mug] = catalog["rewards"]
        assert (mug["id"], mug["cost"], mug["remaining"]) == ("mug", 50, 0)

        # kubectl delete: the operator lets go of the program; Retain keeps the stream.
        programs.delete_cluster_custom_object(crd.GROUP, crd.VERSION, crd.PLURAL, name)

        deadline.wait(
            f"{name} deleted by the operator",
            lambda: not program_exists(programs, name),
            30,
            lambda: operator.log()[-4000:],
        )
        assert namespace_going(core, namespace)
        assert asyncio.run(pending_events(nats_url, name)) == 0  # the stream and consumer are still there


# --- the harness itself: what it resolves, and that it refuses what it cannot ------------------------


@pytest.fixture(scope="module")
def harness_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A namespace with a Secret `creds` and a ConfigMap `cfg`, on the real API server."""
    core = client.CoreV1Api(kube_api)
    with labelled_namespace(kube_api, "e2e-podrunner", RUN) as name:
        core.create_namespaced_secret(
            name,
            client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"url": "nats://n:4222"}),
        )
        core.create_namespaced_config_map(
            name,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name="cfg"), data={"program.yaml": "kind: X\n", "level": "DEBUG"}
            ),
        )
        yield name  # the namespace controller removes the rest


def harness_pod() -> Doc:
    return {
        "containers": [
            {
                "name": "app",
                "command": ["gamify"],
                "args": ["run", "$(MODE)", "--config", "/etc/app/program.yaml", "$$(KEPT)"],
                "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
                "env": [
                    {"name": "MODE", "value": "ingest"},
                    {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "url"}}},
                    {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
                    {
                        "name": "GONE",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "x", "optional": True}},
                    },
                    {"name": "FILE", "value": "/etc/app/program.yaml"},
                    {"name": "PORT", "value": "8080"},
                    {"name": "LISTEN", "value": "0.0.0.0:$(PORT)"},
                ],
                "ports": [{"name": "http", "containerPort": 8080}],
                "volumeMounts": [
                    {"name": "cfg", "mountPath": "/etc/app", "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {
                "name": "cfg",
                "configMap": {"name": "cfg", "items": [{"key": "program.yaml", "path": "program.yaml"}]},
            },
            {"name": "tmp", "emptyDir": {}},
        ],
    }


def test_the_harness_resolves_what_a_kubelet_would(
    harness_namespace: str, kube_api: client.ApiClient, tmp_path: Path
) -> None:
    command = resolve_container(
        harness_pod(), "app", harness_namespace, client.CoreV1Api(kube_api), root=tmp_path
    )
    mounted = tmp_path / "volumes" / "cfg" / "program.yaml"
    assert command.argv == [str(VENV_BIN / "gamify"), "run", "ingest", "--config", str(mounted), "$(KEPT)"]
    port = command.local_port("http")
    assert command.local_port(8080) == port
    assert (
        command.probe_url({"httpGet": {"path": "/readyz", "port": "http"}})
        == f"http://127.0.0.1:{port}/readyz"
    )
    env = command.env
    assert (env["URL"], env["LEVEL"], env["CFG_level"]) == ("nats://n:4222", "DEBUG", "DEBUG")
    assert (env["PORT"], env["LISTEN"]) == (str(port), f"0.0.0.0:{port}")
    assert env["FILE"] == str(mounted) and mounted.read_text() == "kind: X\n"
    assert mounted.stat().st_mode & 0o222 == 0  # mounted readOnly
    assert "GONE" not in env  # optional and missing: not set
    assert set(env) - {"URL", "LEVEL", "MODE", "FILE", "PORT", "LISTEN"} == {
        "PATH",
        "HOME",
        "LANG",
        "CFG_level",
        "CFG_program.yaml",
    }  # fmt: skip  - nothing leaks in from this process
    assert command.cwd.is_dir() and command.cwd.is_relative_to(tmp_path)


def _edit(change: Callable[[Doc], Any]) -> Doc:
    pod = copy.deepcopy(harness_pod())
    change(pod)
    return pod


def _env(pod: Doc) -> list[Doc]:
    return list(pod["containers"][0]["env"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: _env(p)[0].update(value="$(NOWHERE)"), "names no variable"),
        (lambda p: p["containers"][0]["env"].append(
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}), "fieldRef"),
        (lambda p: _env(p)[1]["valueFrom"]["secretKeyRef"].update(key="missing"), "has no key 'missing'"),
        (lambda p: _env(p)[2]["valueFrom"]["configMapKeyRef"].update(name="nope"), "nope does not exist"),
        (lambda p: p["volumes"].pop(1), "names no volume 'tmp'"),
        (lambda p: p["volumes"].__setitem__(1, {"name": "tmp", "hostPath": {"path": "/"}}), "not supported"),
        (lambda p: p["volumes"][0]["configMap"]["items"][0].update(key="absent"), "no key 'absent'"),
        (lambda p: p["containers"][0].pop("command"), "entrypoint"),
        (lambda p: p["containers"][0].update(command=["no-such-binary"]), "PATH"),
        (lambda p: _env(p)[5].update(value="9999"), "containerPort 8080"),
        (lambda p: p["containers"][0].update(workingDir="/app"), "inside the image"),
    ],
)  # fmt: skip
def test_the_harness_refuses_what_it_cannot_resolve(
    harness_namespace: str, kube_api: client.ApiClient, tmp_path: Path, change: Any, message: str
) -> None:
    with pytest.raises(PodSpecError, match=re.escape(message)):
        resolve_container(_edit(change), "app", harness_namespace, client.CoreV1Api(kube_api), root=tmp_path)
