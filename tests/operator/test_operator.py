"""The operator on a REAL Kubernetes API server, with real NATS, MariaDB and a GCS emulator.

The operator runs as a subprocess (`python -m gamify_operator --standalone`), exactly as it runs
in a pod, so it can be SIGKILLed and restarted. It only watches programs labelled with this
module's run id (`GAMIFY_OPERATOR_SELECTOR`), so other test sessions on the same control plane
(and test_crd.py's stored objects) are never touched. Timers run every second.

What is proven, by reading the API server, NATS and MariaDB back:
- a program becomes every child `build_all` describes (same spec, owned by the program), a
  stream with its consumer, a schema with its own user and grants, a bucket prefix, and a
  status (phase, conditions, names, URLs) that `kubectl get gp` shows; no secret anywhere in
  the status, the events or the operator's log;
- updates (rules, autoscaling bounds, suspend), the lifecycle by the clock (Scheduled, Active,
  Ended, final snapshot, scale to zero) and extensions;
- an invalid spec (Failed, Warning) and a missing bucket (temporary: retried until it exists);
- deletion with Retain and with Delete;
- SIGKILL in the middle of a reconcile, restart: same objects, same Secrets, working password;
- two programs: separate everything, and A's database user cannot read B's schema.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client, dynamic
from nats import connect as connect_nats
from nats.js.errors import NotFoundError as StreamNotFound
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from gamify.credentials import generate_api_key, hash_api_key
from gamify.naming import ProgramNames
from gamify.program import parse_program
from gamify.settings import Servers
from gamify_operator import crd
from gamify_operator.builders import ProgramSecrets, build_all, read_secret
from gamify_operator.builders.labels import ANNOTATION_CONFIG_CHECKSUM, LABEL_TENANT
from gamify_operator.config import OperatorConfig
from gamify_operator.kube import CHILD_KINDS, NAMESPACED_CHILD_KINDS
from gamify_operator.reconcile import stored_api_keys
from tests.cluster import get_object, wait_until
from tests.conftest import unique_program_id
from tests.operator import harness
from tests.operator.harness import (
    OperatorProcess,
    delete_program,
    new_run,
    program_document,
    read_program,
    rfc3339,
    run_programs,
    running_operator,
)

RUN = new_run("op")
Doc = dict[str, Any]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]

COMPONENT_CONDITIONS = ("Namespace", "Stream", "Database", "Bucket", "Secrets", "Workloads", "Snapshots")


def now() -> datetime:
    return datetime.now(UTC)


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def operator_env(kubeconfig: str, nats_url: str, mysql_admin_url: str, bucket: str) -> dict[str, str]:
    return harness.operator_env(
        kubeconfig, RUN, nats_url=nats_url, mysql_url=mysql_admin_url, bucket=bucket, log_level="INFO"
    )


@pytest.fixture(scope="module")
def config(operator_env: dict[str, str]) -> OperatorConfig:
    """The operator's configuration, read from the same environment it runs with."""
    return OperatorConfig.from_env(operator_env)


@pytest.fixture(scope="module")
def operator(
    operator_env: dict[str, str],
    programs: client.CustomObjectsApi,
    tmp_path_factory: pytest.TempPathFactory,
    mysql_admin_url: str,
    nats_url: str,
    bucket: str,
) -> Iterator[OperatorProcess]:
    servers = Servers(nats_url=nats_url, mysql_admin_url=mysql_admin_url, bucket=f"gs://{bucket}")
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running_operator(operator_env, log, programs, RUN, servers, CREATED) as process:
        yield process


CREATED: list[str] = []


# --- helpers -----------------------------------------------------------------------------------------


def create(programs: client.CustomObjectsApi, prefix: str, **spec: Any) -> str:
    name = unique_program_id(prefix)
    CREATED.append(name)
    programs.create_cluster_custom_object(
        crd.GROUP, crd.VERSION, crd.PLURAL, program_document(name, RUN, **spec)
    )
    return name


def patch_spec(programs: client.CustomObjectsApi, name: str, spec: Doc) -> None:
    programs.patch_cluster_custom_object(crd.GROUP, crd.VERSION, crd.PLURAL, name, {"spec": spec})


def wait_status(
    programs: client.CustomObjectsApi,
    name: str,
    predicate: Callable[[Doc], bool],
    what: str,
    timeout: float = 30,
) -> Doc:
    def check() -> Doc | None:
        body = read_program(programs, name)
        return body if predicate(body) else None

    try:
        return wait_until(f"{name}: {what}", check, timeout=timeout, interval=0.2)  # type: ignore[no-any-return]
    except pytest.fail.Exception:
        body = read_program(programs, name)
        print(json.dumps(body.get("status"), indent=1))
        raise


def phase_is(phase: str, generation: int | None = None) -> Callable[[Doc], bool]:
    def check(body: Doc) -> bool:
        current = body.get("status") or {}
        wanted_generation = body["metadata"]["generation"] if generation is None else generation
        return bool(current.get("phase") == phase and current.get("observedGeneration") == wanted_generation)

    return check


def conditions(body: Doc) -> dict[str, Doc]:
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions", [])}


get = get_object  # the shared helper in tests/cluster.py


def events(kube_api: client.ApiClient, name: str) -> list[Doc]:
    listed = client.CoreV1Api(kube_api).list_namespaced_event(
        "default", field_selector=f"involvedObject.name={name},involvedObject.kind={crd.KIND}"
    )
    return [{"type": e.type, "reason": e.reason, "message": e.message or ""} for e in listed.items]


def wait_event(kube_api: client.ApiClient, name: str, reason: str, timeout: float = 15) -> Doc:
    def find() -> Doc | None:
        return next((e for e in events(kube_api, name) if e["reason"] == reason), None)

    return wait_until(f"event {reason} on {name}", find, timeout=timeout)  # type: ignore[no-any-return]


def secret_data(dyn: dynamic.DynamicClient, name: str, suffix: str) -> dict[str, str]:
    found = get(dyn, "v1", "Secret", f"{name}-{suffix}", ProgramNames(name).namespace)
    assert found is not None, f"Secret {name}-{suffix} missing"
    return dict(found["data"])


def deployment_replicas(dyn: dynamic.DynamicClient, name: str, deployment: str) -> int | None:
    found = get(dyn, "apps/v1", "Deployment", deployment, ProgramNames(name).namespace)
    assert found is not None
    return found["spec"].get("replicas")


def assert_subset(desired: Any, live: Any, path: str = "") -> None:
    """Every value `desired` sets is in `live` (the API server adds defaults, never changes ours;
    it drops empty lists and objects, which mean the same as absent)."""
    if isinstance(desired, dict):
        assert isinstance(live, dict), f"{path}: expected an object, got {live!r}"
        for key, value in desired.items():
            if value in ([], {}) and key not in live:
                continue
            assert key in live, f"{path}.{key} missing in the live object"
            assert_subset(value, live[key], f"{path}.{key}")
    elif isinstance(desired, list):
        assert isinstance(live, list) and len(live) == len(desired), f"{path}: {desired!r} != {live!r}"
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            assert_subset(want, have, f"{path}[{index}]")
    else:
        assert desired == live, f"{path}: {desired!r} != {live!r}"


def expected_children(
    body: Doc, config: OperatorConfig, dyn: dynamic.DynamicClient, **flags: Any
) -> list[Doc]:
    """What the operator must have applied: `build_all` with the live secret values."""
    name = body["metadata"]["name"]
    program = parse_program({**body, "metadata": {"name": name}})
    keys = secret_data(dyn, name, "api-keys")
    database = secret_data(dyn, name, "database")
    values = ProgramSecrets(
        api_keys=stored_api_keys(keys),
        database_url=read_secret(database, "url") or "",
        nats_url=config.workload_nats_url,
    )
    return build_all(program, config, values, owner_meta=body["metadata"], **flags)


def children_by_label(dyn: dynamic.DynamicClient, name: str) -> set[tuple[str, str]]:
    """Every (kind, name) of the program's own kinds carrying its label, in its namespace."""
    found = set()
    for api_version, kind in NAMESPACED_CHILD_KINDS:
        listed = dyn.get(
            dyn.resources.get(api_version=api_version, kind=kind),
            namespace=ProgramNames(name).namespace,
            label_selector=f"gamification.io/program={name}",
        )
        found |= {(kind, item["metadata"]["name"]) for item in listed.to_dict()["items"]}
    return found


async def _stream_state(nats_url: str, name: str) -> tuple[list[str] | None, bool]:
    names = ProgramNames(name)
    connection = await connect_nats(nats_url, connect_timeout=3)
    try:
        js = connection.jetstream()
        try:
            info = await js.stream_info(names.stream)
        except StreamNotFound:
            return None, False
        try:
            await js.consumer_info(names.stream, names.durable)
            consumer = True
        except StreamNotFound:
            consumer = False
        return list(info.config.subjects or []), consumer
    finally:
        await connection.close()


def stream_state(nats_url: str, name: str) -> tuple[list[str] | None, bool]:
    """(subjects of the program's stream or None, whether its durable consumer exists)."""
    return asyncio.run(_stream_state(nats_url, name))


def database_state(mysql_admin_url: str, name: str) -> tuple[bool, list[str]]:
    """(schema exists, grants of the program user; [] when the user does not exist)."""
    names = ProgramNames(name)
    engine = create_engine(mysql_admin_url)
    try:
        with engine.connect() as connection:
            schema = connection.execute(
                text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s"), {"s": names.schema}
            ).first()
            user = connection.execute(
                text("SELECT 1 FROM mysql.user WHERE User = :u AND Host = '%'"), {"u": names.db_user}
            ).first()
            grants = (
                [row[0] for row in connection.execute(text(f"SHOW GRANTS FOR '{names.db_user}'@'%'"))]
                if user
                else []
            )
    finally:
        engine.dispose()
    return schema is not None, grants


def decoded(data: dict[str, str], key: str) -> str:
    return base64.b64decode(data[key]).decode()


# --- a program, created and checked ---------------------------------------------------------------------


def test_program_becomes_an_isolated_tenant(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    dyn: dynamic.DynamicClient,
    kube_api: client.ApiClient,
    kubectl: Kubectl,
    config: OperatorConfig,
    nats_url: str,
    mysql_admin_url: str,
    bucket: str,
    gcs_client: Any,
) -> None:
    name = create(programs, "op")
    body = wait_status(programs, name, phase_is("Active", 1), "Active")
    names = ProgramNames(name)
    status = body["status"]

    # Status: names, URLs, one True condition per component, and Ready.
    assert status["namespace"] == names.namespace == f"gamify-{name}"
    assert status["ingestURL"] == f"http://ingest.gamify-{name}.svc.cluster.local"
    assert status["stream"] == names.stream
    assert status["database"] == names.schema
    assert status["snapshotURL"] == f"gs://{bucket}/{name}/"
    found = conditions(body)
    assert set(found) == {*COMPONENT_CONDITIONS, "Ready"}
    for condition in found.values():
        assert condition["status"] == "True", condition
        assert condition["observedGeneration"] == 1
        assert condition["reason"] and condition["lastTransitionTime"]
    # The tenant label on the program itself.
    assert body["metadata"]["labels"][LABEL_TENANT] == "acme"
    assert "gamification.io/finalizer" in body["metadata"]["finalizers"]
    assert not [key for key in body["metadata"].get("annotations", {}) if key.startswith("kopf.zalando.org")]

    # Every child build_all describes, with that spec, owned by the program; nothing else.
    expected = expected_children(body, config, dyn)
    for want in expected:
        meta = want["metadata"]
        live = get(dyn, want["apiVersion"], want["kind"], meta["name"], meta.get("namespace"))
        assert live is not None, f"{want['kind']} {meta['name']} missing"
        (owner,) = live["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            crd.KIND,
            name,
            body["metadata"]["uid"],
            True,
        )
        assert_subset(meta.get("labels", {}), live["metadata"].get("labels", {}), f"{want['kind']}.labels")
        for section in ("spec", "data", "type", "automountServiceAccountToken"):
            if section in want:
                assert_subset(want[section], live[section], f"{want['kind']}/{meta['name']}.{section}")
    wanted = {(w["kind"], w["metadata"]["name"]) for w in expected if w["kind"] != "Namespace"}
    assert children_by_label(dyn, name) == wanted

    # Outside Kubernetes: stream + consumer, schema + its own user with grants on it only.
    subjects, consumer = stream_state(nats_url, name)
    assert subjects == [names.subjects] and consumer
    schema, grants = database_state(mysql_admin_url, name)
    assert schema
    on_schema = [g for g in grants if "`gamify\\_" in g or f"`{names.schema}`" in g]
    assert on_schema and all("ALL PRIVILEGES" not in g for g in on_schema), grants
    assert all("*.*" not in g or "USAGE" in g for g in grants), grants
    marker = gcs_client.bucket(bucket).blob(f"{name}/_program.json")
    assert json.loads(marker.download_as_bytes())["tenant"] == "acme"

    # The database password works: the program user logs in with the Secret's URL.
    database = secret_data(dyn, name, "database")
    engine = create_engine(decoded(database, "url"))
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM events")).scalar_one() == 0
    finally:
        engine.dispose()

    # kubectl get gp: tenant, phase, start, end, dead letters (a column once counted), age.
    table = kubectl("get", "gp", name)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "TENANT", "PHASE", "START", "END", "DEAD", "LETTERS", "AGE"]
    assert row.split()[:5] == [
        name,
        "acme",
        "Active",
        *(body["spec"]["schedule"][k] for k in ("start", "end")),
    ]

    # Events: what happened, and no secret in status, events or logs.
    happened = {e["reason"] for e in events(kube_api, name) if e["type"] == "Normal"}
    assert {"SecretsCreated", "Provisioned"} <= happened
    keys = secret_data(dyn, name, "api-keys")
    secret_values = [decoded(keys, "api-key"), decoded(database, "password"), decoded(database, "url")]
    exposed = json.dumps(body["status"]) + json.dumps(events(kube_api, name)) + operator.log()
    for value in secret_values:
        assert value not in exposed


def test_rules_update_rolls_config_and_pods(
    operator: OperatorProcess, programs: client.CustomObjectsApi, dyn: dynamic.DynamicClient
) -> None:
    name = create(programs, "upd")
    wait_status(programs, name, phase_is("Active", 1), "Active")
    namespace = ProgramNames(name).namespace
    configmap = get(dyn, "v1", "ConfigMap", f"{name}-program", namespace)
    before = get(dyn, "apps/v1", "Deployment", "scoring", namespace)
    keys = secret_data(dyn, name, "api-keys")
    assert configmap is not None and before is not None

    rules = [
        {"id": "steps", "event": "activity.steps", "points": 20},
        {"id": "checkin", "event": "app.checkin", "points": 5, "oncePerUser": True},
    ]
    patch_spec(programs, name, {"rules": rules})
    body = wait_status(programs, name, phase_is("Active", 2), "generation 2 reconciled")
    assert all(c["observedGeneration"] == 2 for c in conditions(body).values())

    updated = get(dyn, "v1", "ConfigMap", f"{name}-program", namespace)
    after = get(dyn, "apps/v1", "Deployment", "scoring", namespace)
    assert updated is not None and after is not None
    assert updated["data"] != configmap["data"]
    assert "app.checkin" in next(iter(updated["data"].values()))
    annotation = ANNOTATION_CONFIG_CHECKSUM
    old_sum = before["spec"]["template"]["metadata"]["annotations"][annotation]
    new_sum = after["spec"]["template"]["metadata"]["annotations"][annotation]
    assert old_sum != new_sum
    # The API keys were not touched by the update.
    assert secret_data(dyn, name, "api-keys") == keys


def test_api_key_added_by_hand_is_taken_into_use(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    dyn: dynamic.DynamicClient,
    kube_api: client.ApiClient,
) -> None:
    name = create(programs, "rot")
    wait_status(programs, name, phase_is("Active", 1), "Active")
    namespace = ProgramNames(name).namespace
    keys = secret_data(dyn, name, "api-keys")
    current = decoded(keys, "api-key")
    before = get(dyn, "apps/v1", "Deployment", "ingest", namespace)
    assert before is not None

    # Rotation, as the program manager does it: a new line in `api-keys`, nothing else.
    new_key = generate_api_key(name)
    listed = base64.b64encode(f"{current}\n{new_key}\n".encode()).decode()
    client.CoreV1Api(kube_api).patch_namespaced_secret(
        f"{name}-api-keys", namespace, {"data": {"api-keys": listed}}
    )

    def hashes() -> list[str]:
        return decoded(secret_data(dyn, name, "api-keys"), "api-key-hashes").split(",")

    wait_until("the new key's hash in api-key-hashes", lambda: hash_api_key(new_key) in hashes(), timeout=20)
    assert hashes() == [hash_api_key(current), hash_api_key(new_key)]
    assert decoded(secret_data(dyn, name, "api-keys"), "api-key") == current

    def checksum(deployment: Doc | None) -> str:
        assert deployment is not None
        return str(
            deployment["spec"]["template"]["metadata"]["annotations"]["gamification.io/secrets-checksum"]
        )

    # The ingest pods roll, to read the new hashes (the Deployment is applied after the Secret).
    old = checksum(before)
    wait_until(
        "a new secrets checksum on ingest",
        lambda: checksum(get(dyn, "apps/v1", "Deployment", "ingest", namespace)) != old,
        timeout=10,
    )


def test_autoscaler_comes_and_goes_with_its_bounds(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    dyn: dynamic.DynamicClient,
    kube_api: client.ApiClient,
) -> None:
    name = create(programs, "hpa", ingest={"minReplicas": 2, "maxReplicas": 5})
    wait_status(programs, name, phase_is("Active", 1), "Active")
    namespace = ProgramNames(name).namespace
    hpa = get(dyn, "autoscaling/v2", "HorizontalPodAutoscaler", "ingest", namespace)
    assert hpa is not None and (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert deployment_replicas(dyn, name, "ingest") == 2

    # The autoscaler moved ingest to 4: a reconcile must not undo that.
    client.AppsV1Api(kube_api).patch_namespaced_deployment_scale(
        "ingest", namespace, {"spec": {"replicas": 4}}
    )
    patch_spec(programs, name, {"displayName": "still autoscaled"})
    wait_status(programs, name, phase_is("Active", 2), "generation 2 reconciled")
    assert deployment_replicas(dyn, name, "ingest") == 4

    # Bounds removed: the autoscaler is deleted, ingest gets its fixed replicas.
    patch_spec(programs, name, {"ingest": {"minReplicas": None, "maxReplicas": None, "replicas": 3}})
    wait_status(programs, name, phase_is("Active", 3), "generation 3 reconciled")
    assert get(dyn, "autoscaling/v2", "HorizontalPodAutoscaler", "ingest", namespace) is None
    assert deployment_replicas(dyn, name, "ingest") == 3
    removed = wait_event(kube_api, name, "Removed")
    assert "HorizontalPodAutoscaler ingest" in removed["message"]


def test_suspend_scales_ingest_to_zero_and_deletes_nothing(
    operator: OperatorProcess, programs: client.CustomObjectsApi, dyn: dynamic.DynamicClient
) -> None:
    name = create(programs, "sus")
    wait_status(programs, name, phase_is("Active", 1), "Active")
    before = children_by_label(dyn, name)

    patch_spec(programs, name, {"suspend": True})
    body = wait_status(programs, name, phase_is("Suspended", 2), "Suspended")
    assert deployment_replicas(dyn, name, "ingest") == 0
    assert deployment_replicas(dyn, name, "scoring") == 1  # the backlog is still scored
    assert children_by_label(dyn, name) == before
    assert "scaled to zero" in conditions(body)["Workloads"]["message"]

    patch_spec(programs, name, {"suspend": False})
    wait_status(programs, name, phase_is("Active", 3), "Active again")
    assert deployment_replicas(dyn, name, "ingest") == 2


# --- dead letters ----------------------------------------------------------------------------------


async def _dead_letter(nats_url: str, name: str, delete_seq: int | None = None) -> int:
    """Write one dead letter into the program's stream as the scorer does (or delete one)."""
    names = ProgramNames(name)
    connection = await connect_nats(nats_url, connect_timeout=3)
    try:
        js = connection.jetstream()
        if delete_seq is not None:
            await js.delete_msg(names.stream, delete_seq)
            return delete_seq
        ack = await js.publish(
            names.dead_letter_subject("app.visit"),
            b"{not json",
            headers={"Gamify-Reason": "not a valid event", "Gamify-Event-Id": "junk-1"},
        )
        return int(ack.seq)
    finally:
        await connection.close()


def test_dead_letters_show_in_the_status_and_as_a_warning(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    kube_api: client.ApiClient,
    kubectl: Kubectl,
    nats_url: str,
) -> None:
    name = create(programs, "dlq")
    wait_status(programs, name, lambda b: b.get("status", {}).get("deadLetters") == 0, "no dead letters")
    seq = asyncio.run(_dead_letter(nats_url, name))
    wait_status(programs, name, lambda b: b["status"].get("deadLetters") == 1, "one dead letter counted")
    warning = wait_event(kube_api, name, "DeadLetters")
    assert warning["type"] == "Warning" and f"gamify deadletters list {name}" in warning["message"]
    header, row = kubectl("get", "gp", name).stdout.splitlines()
    assert header.split()[5:7] == ["DEAD", "LETTERS"] and row.split()[5] == "1", (header, row)
    asyncio.run(_dead_letter(nats_url, name, delete_seq=seq))  # replayed, or deleted
    wait_status(programs, name, lambda b: b["status"].get("deadLetters") == 0, "counted down again")
    warnings = [e for e in events(kube_api, name) if e["reason"] == "DeadLetters"]
    assert len(warnings) == 1  # one when they grew, none on the way down


# --- the lifecycle ----------------------------------------------------------------------------------


def test_timer_moves_a_program_through_its_dates(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    dyn: dynamic.DynamicClient,
    gcs_client: Any,
    bucket: str,
) -> None:
    start = now() + timedelta(seconds=6)  # room for the first reconcile on a busy machine
    end = start + timedelta(seconds=3)
    schedule = {"start": rfc3339(start), "end": rfc3339(end), "gracePeriod": "1s"}
    name = create(programs, "life", schedule=schedule)
    wait_status(programs, name, phase_is("Scheduled", 1), "Scheduled")
    assert deployment_replicas(dyn, name, "ingest") == 2  # up before the start, ready for launch
    wait_status(programs, name, phase_is("Active", 1), "Active at start", timeout=20)
    body = wait_status(
        programs,
        name,
        lambda b: phase_is("Ended", 1)(b) and "finalSnapshot" in b["status"],
        "Ended and closed",
        timeout=20,
    )
    final = body["status"]["finalSnapshot"]
    assert final["end"] == rfc3339(end) and final["url"] == f"gs://{bucket}/{name}/"
    assert gcs_client.bucket(bucket).blob(f"{name}/manifest.json").exists()
    assert deployment_replicas(dyn, name, "ingest") == 0
    assert deployment_replicas(dyn, name, "scoring") == 0
    cronjob = get(dyn, "batch/v1", "CronJob", "snapshots", ProgramNames(name).namespace)
    assert cronjob is not None and cronjob["spec"]["suspend"] is True
    assert conditions(body)["Snapshots"]["reason"] == "FinalSnapshotPublished"


def test_extending_an_ended_program_makes_it_active_again(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    dyn: dynamic.DynamicClient,
    kube_api: client.ApiClient,
) -> None:
    start = now() - timedelta(hours=3)
    end = now() - timedelta(hours=2)
    name = create(
        programs, "ext", schedule={"start": rfc3339(start), "end": rfc3339(end), "gracePeriod": "1h"}
    )
    body = wait_status(
        programs, name, lambda b: phase_is("Ended", 1)(b) and "finalSnapshot" in b["status"], "Ended"
    )
    assert body["status"]["extensions"] == []
    assert deployment_replicas(dyn, name, "ingest") == 0

    new_end = now() + timedelta(days=7)
    patch_spec(programs, name, {"schedule": {"end": rfc3339(new_end)}})
    body = wait_status(programs, name, phase_is("Active", 2), "Active after the extension")
    (extension,) = body["status"]["extensions"]
    assert (extension["previousEnd"], extension["newEnd"]) == (rfc3339(end), rfc3339(new_end))
    assert datetime.fromisoformat(extension["at"].replace("Z", "+00:00")) > end
    assert deployment_replicas(dyn, name, "ingest") == 2
    assert deployment_replicas(dyn, name, "scoring") == 1
    cronjob = get(dyn, "batch/v1", "CronJob", "snapshots", ProgramNames(name).namespace)
    assert cronjob is not None and cronjob["spec"]["suspend"] is False
    assert "Extended" in {e["reason"] for e in events(kube_api, name)}


# --- failures ---------------------------------------------------------------------------------------


def test_invalid_spec_fails_permanently_until_fixed(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    dyn: dynamic.DynamicClient,
    kube_api: client.ApiClient,
) -> None:
    start = now() - timedelta(hours=1)
    schedule = {"start": rfc3339(start), "end": rfc3339(start + timedelta(days=1))}
    # The CRD's pattern lets it through; the model knows there is no such zone.
    name = create(programs, "bad", schedule={**schedule, "timezone": "Mars/Olympus"})
    body = wait_status(programs, name, phase_is("Failed", 1), "Failed")
    ready = conditions(body)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.schedule.timezone" in ready["message"] and "Mars/Olympus" in ready["message"]
    warning = wait_event(kube_api, name, "InvalidSpec")
    assert warning["type"] == "Warning" and "spec.schedule.timezone" in warning["message"]
    assert get(dyn, "v1", "Namespace", ProgramNames(name).namespace) is None

    patch_spec(programs, name, {"schedule": {**schedule, "timezone": "America/Bogota"}})
    wait_status(programs, name, phase_is("Active", 2), "Active once fixed")


def test_missing_bucket_is_retried_until_it_exists(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    kube_api: client.ApiClient,
    gcs_client: Any,
) -> None:
    missing = f"op-late-{secrets.token_hex(4)}"
    name = create(programs, "nob", snapshots={"bucket": f"gs://{missing}"})
    body = wait_status(
        programs,
        name,
        lambda b: (conditions(b).get("Bucket") or {}).get("status") == "False",
        "Bucket condition False",
    )
    assert body["status"]["phase"] == "Provisioning"
    bucket_condition = conditions(body)["Bucket"]
    assert bucket_condition["reason"] == "ProvisioningFailed" and missing in bucket_condition["message"]
    assert conditions(body)["Ready"]["status"] == "False"
    assert conditions(body)["Stream"]["status"] == "True"  # what worked is said too
    warning = wait_event(kube_api, name, "ProvisioningFailed")
    assert warning["type"] == "Warning" and "bucket" in warning["message"]

    created = gcs_client.create_bucket(missing)
    try:
        wait_status(programs, name, phase_is("Active", 1), "Active once the bucket exists", timeout=40)
    finally:
        delete_program(programs, name)
        wait_until(f"{name} deleted", lambda: name not in run_programs(programs, RUN), timeout=30)
        for blob in gcs_client.list_blobs(missing):
            blob.delete()
        created.delete()


# --- deletion ---------------------------------------------------------------------------------------


def _namespace_gone(dyn: dynamic.DynamicClient, name: str) -> bool:
    return get(dyn, "v1", "Namespace", ProgramNames(name).namespace) is None


def test_delete_with_retain_keeps_stream_and_schema(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    dyn: dynamic.DynamicClient,
    kube_api: client.ApiClient,
    nats_url: str,
    mysql_admin_url: str,
) -> None:
    name = create(programs, "ret")
    wait_status(programs, name, phase_is("Active", 1), "Active")
    delete_program(programs, name)
    wait_until(f"{name} deleted", lambda: name not in run_programs(programs, RUN), timeout=30)
    wait_until(f"namespace of {name} gone", lambda: _namespace_gone(dyn, name), timeout=90, interval=1)
    subjects, consumer = stream_state(nats_url, name)
    assert subjects is not None and consumer
    schema, grants = database_state(mysql_admin_url, name)
    assert schema and grants


def test_delete_with_delete_removes_stream_schema_and_user(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    dyn: dynamic.DynamicClient,
    nats_url: str,
    mysql_admin_url: str,
    gcs_client: Any,
    bucket: str,
) -> None:
    name = create(programs, "del", retention={"onDelete": "Delete"})
    wait_status(programs, name, phase_is("Active", 1), "Active")
    assert stream_state(nats_url, name)[0] is not None
    delete_program(programs, name)
    wait_until(f"{name} deleted", lambda: name not in run_programs(programs, RUN), timeout=30)
    assert stream_state(nats_url, name) == (None, False)
    assert database_state(mysql_admin_url, name) == (False, [])
    assert not list(gcs_client.list_blobs(bucket, prefix=f"{name}/"))
    wait_until(f"namespace of {name} gone", lambda: _namespace_gone(dyn, name), timeout=90, interval=1)


# --- crash safety -----------------------------------------------------------------------------------


def test_killed_mid_reconcile_converges_without_duplicates_or_new_secrets(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    dyn: dynamic.DynamicClient,
    config: OperatorConfig,
) -> None:
    name = create(programs, "kill")
    namespace = ProgramNames(name).namespace
    # The namespace is the first thing a reconcile writes: kill the operator right then.
    wait_until(
        "the namespace (reconcile started)",
        lambda: get(dyn, "v1", "Namespace", namespace),
        timeout=30,
        interval=0.02,
    )
    operator.kill()
    try:
        at_kill = read_program(programs, name)
        assert (at_kill.get("status") or {}).get("phase") != "Active", "the reconcile had already finished"
        keys_at_kill = get(dyn, "v1", "Secret", f"{name}-api-keys", namespace)
        database_at_kill = get(dyn, "v1", "Secret", f"{name}-database", namespace)
    finally:
        operator.start()
    body = wait_status(programs, name, phase_is("Active", 1), "Active after the restart")
    keys = secret_data(dyn, name, "api-keys")
    database = secret_data(dyn, name, "database")
    if keys_at_kill is not None:
        assert keys == keys_at_kill["data"]
    if database_at_kill is not None:
        assert database == database_at_kill["data"]
    expected = {(w["kind"], w["metadata"]["name"]) for w in expected_children(body, config, dyn)}
    assert children_by_label(dyn, name) == expected - {("Namespace", namespace)}
    uids = {
        (kind, child): get(dyn, *_kind(kind), child, namespace)["metadata"]["uid"]  # type: ignore[index]
        for kind, child in expected
        if kind != "Namespace"
    }

    # Killed again mid-update, then restarted: the same objects (uids), the same Secrets.
    patch_spec(programs, name, {"displayName": "after a crash"})
    time.sleep(0.3)
    operator.kill()
    operator.start()
    wait_status(programs, name, phase_is("Active", 2), "generation 2 after the second restart")
    assert secret_data(dyn, name, "api-keys") == keys
    assert secret_data(dyn, name, "database") == database
    for (kind, child), uid in uids.items():
        live = get(dyn, *_kind(kind), child, namespace)
        assert live is not None and live["metadata"]["uid"] == uid, f"{kind} {child} was recreated"
    engine = create_engine(decoded(database, "url"))
    try:
        with engine.connect() as connection:  # the stored password is the user's password
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def _kind(kind: str) -> tuple[str, str]:
    return next((api_version, k) for api_version, k in CHILD_KINDS if k == kind)


# --- isolation ----------------------------------------------------------------------------------------


def test_two_programs_are_isolated_from_each_other(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    dyn: dynamic.DynamicClient,
    nats_url: str,
) -> None:
    first = create(programs, "iso-a", tenant="acme")
    second = create(programs, "iso-b", tenant="globex")
    for name in (first, second):
        wait_status(programs, name, phase_is("Active", 1), "Active")
    a, b = ProgramNames(first), ProgramNames(second)
    assert a.namespace != b.namespace
    assert get(dyn, "v1", "Secret", f"{first}-api-keys", b.namespace) is None

    keys_a, keys_b = secret_data(dyn, first, "api-keys"), secret_data(dyn, second, "api-keys")
    assert decoded(keys_a, "api-key") != decoded(keys_b, "api-key")
    assert decoded(keys_a, "api-key-hashes") != decoded(keys_b, "api-key-hashes")
    db_a, db_b = secret_data(dyn, first, "database"), secret_data(dyn, second, "database")
    assert decoded(db_a, "username") == a.db_user != decoded(db_b, "username") == b.db_user
    assert decoded(db_a, "password") != decoded(db_b, "password")
    assert stream_state(nats_url, first)[0] == [a.subjects]
    assert stream_state(nats_url, second)[0] == [b.subjects]

    # Program A's database user, for real: its own schema yes, B's schema no.
    engine = create_engine(decoded(db_a, "url"))
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT COUNT(*) FROM events")).scalar_one()
            with pytest.raises((OperationalError, ProgrammingError)) as denied:
                connection.execute(text(f"SELECT COUNT(*) FROM `{b.schema}`.events"))
            assert denied.value.orig is not None and denied.value.orig.args[0] in (1044, 1142)
    finally:
        engine.dispose()
