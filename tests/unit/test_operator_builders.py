"""The operator's builders: every child object of a program, checked as data (no cluster).

The env resolver below is what a harness (or the kubelet) does with the Deployments and the
CronJob: every `secretKeyRef` / `configMapKeyRef` must name a key the built Secrets and
ConfigMap hold, and the resolved values must be what each process needs to run.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from typing import Any

import kopf
import pytest
import yaml
from kubernetes.client import ApiClient

from gamify.credentials import hash_api_key
from gamify.program import Program, parse_program
from gamify_operator.builders import (
    ProgramSecrets,
    api_keys_secret,
    build_all,
    config_checksum,
    ingest_replicas,
    merge_secret,
    owned,
    read_secret,
)
from gamify_operator.builders.configmap import PROGRAM_FILE, runtime_program
from gamify_operator.builders.labels import ANNOTATION_CONFIG_CHECKSUM, ANNOTATION_SECRETS_CHECKSUM
from gamify_operator.config import ConfigError, HandlerSettings, OperatorConfig, Resources

PROGRAM = "acme-2027"
NAMESPACE = f"gamify-{PROGRAM}"
KEY = "gk_current-key-0123456789abcdefghijklmnopqrstuvwxyz"
OLD_KEY = "gk_old-key-0123456789abcdefghijklmnopqrstuvwxyzABCD"
DB_URL = "mysql+pymysql://gamify_acme_2027:s3cret-pw@mysql.mysql.svc:3306/gamify_acme_2027"
NATS = "nats://nats.nats.svc:4222"
OWNER = {"name": PROGRAM, "uid": "0b7c1a52-7d0e-4c2e-9a55-2f4a1f0c9e11"}

API_VERSIONS = {
    "Namespace": "v1",
    "ResourceQuota": "v1",
    "LimitRange": "v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "ServiceAccount": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "CronJob": "batch/v1",
}


def make_program(**spec_changes: Any) -> Program:
    spec: dict[str, Any] = {
        "tenant": "acme",
        "displayName": "Acme 2027",
        "schedule": {
            "start": "2027-01-01T00:00:00-03:00",
            "end": "2027-03-31T23:59:59-03:00",
            "timezone": "America/Sao_Paulo",
        },
        "rules": [{"id": "steps", "event": "activity.steps", "points": 10}],
        "leaderboards": [{"id": "overall"}],
        "snapshots": {"schedule": "*/10 * * * *"},
    }
    spec.update(spec_changes)
    return parse_program(
        {
            "apiVersion": "gamification.io/v1alpha1",
            "kind": "GamificationProgram",
            "metadata": {"name": PROGRAM},
            "spec": spec,
        }
    )


def make_secrets(*keys: str) -> ProgramSecrets:
    return ProgramSecrets(api_keys=list(keys or (KEY,)), database_url=DB_URL, nats_url=NATS)


def build(program: Program | None = None, config: OperatorConfig | None = None, **kwargs: Any) -> list[dict]:
    return build_all(program or make_program(), config or OperatorConfig(), make_secrets(), **kwargs)


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_specs(objects: list[dict]) -> Iterator[tuple[str, dict, dict]]:
    """(workload, pod template, pod spec) of every Deployment and CronJob."""
    for obj in objects:
        if obj["kind"] == "Deployment":
            template = obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        yield obj["metadata"]["name"], template, template["spec"]


def resolve_env(container: Mapping[str, Any], objects: list[dict], namespace: str) -> dict[str, str]:
    """What the kubelet would put in the process's environment (fails on any dangling ref)."""
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for item in container["env"]:
        assert item["name"] not in env, f"duplicate env {item['name']}"
        if "value" in item:
            assert isinstance(item["value"], str), item
            env[item["name"]] = item["value"]
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = secrets[ref["name"]]
            assert secret["metadata"]["namespace"] == namespace
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            configmap = configmaps[ref["name"]]
            assert configmap["metadata"]["namespace"] == namespace
            env[item["name"]] = configmap["data"][ref["key"]]
        else:
            pytest.fail(f"env {item['name']}: unsupported source {source}")
    return env


def mounted_files(pod_spec: Mapping[str, Any], container: Mapping[str, Any], objects: list[dict]) -> dict:
    """Path -> content of every ConfigMap file the container sees."""
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    files = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]]["data"]
            for item in volume["configMap"]["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = data[item["key"]]
    return files


# --- the whole set ------------------------------------------------------------------------------


def test_build_all_order_kinds_names_and_namespaces() -> None:
    objects = build()
    assert objects[0]["kind"] == "Namespace"
    assert objects[0]["metadata"]["name"] == NAMESPACE
    assert "namespace" not in objects[0]["metadata"]
    for obj in objects[1:]:
        assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]
    kinds = [o["kind"] for o in objects]
    # Guard rails before anything that makes pods; the config pods read before the pods.
    assert kinds.index("ResourceQuota") < kinds.index("Deployment")
    assert kinds.index("LimitRange") < kinds.index("Deployment")
    assert max(i for i, k in enumerate(kinds) if k in ("Secret", "ConfigMap")) < kinds.index("Deployment")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {
        ("ResourceQuota", "quota"),
        ("LimitRange", "limits"),
        ("ServiceAccount", "ingest"),
        ("ServiceAccount", "scoring"),
        ("ServiceAccount", "snapshots"),
        ("Secret", f"{PROGRAM}-api-keys"),
        ("Secret", f"{PROGRAM}-database"),
        ("Secret", f"{PROGRAM}-nats"),
        ("ConfigMap", f"{PROGRAM}-program"),
        ("Service", "ingest"),
        ("Deployment", "ingest"),
        ("Deployment", "scoring"),
        ("PodDisruptionBudget", "ingest"),
        ("CronJob", "snapshots"),
        ("NetworkPolicy", "default-deny"),
    } <= names
    assert len(names) == len(objects), "two objects of one kind share a name"
    assert build() == objects, "builders must be deterministic"


def test_api_versions_are_the_stable_ones() -> None:
    objects = build(make_program(ingest={"minReplicas": 2, "maxReplicas": 6}))
    assert {o["kind"] for o in objects} == set(API_VERSIONS)
    for obj in objects:
        assert obj["apiVersion"] == API_VERSIONS[obj["kind"]], obj["kind"]


def _round_trip(obj: dict) -> Any:
    version = obj["apiVersion"].rpartition("/")[2]
    client = ApiClient()
    model = client._ApiClient__deserialize(obj, f"{version.capitalize()}{obj['kind']}")  # type: ignore[attr-defined]
    return client.sanitize_for_serialization(model)


def test_every_field_is_known_to_the_official_kubernetes_models() -> None:
    """A misspelled or misplaced field is dropped by the client's models, so it shows here."""
    config = OperatorConfig(metrics_from_namespaces=("monitoring",))
    objects = build(make_program(ingest={"minReplicas": 2, "maxReplicas": 6}), config, owner_meta=OWNER)
    for obj in objects:
        assert _round_trip(obj) == obj, f"{obj['kind']}/{obj['metadata']['name']}"
    # The check can fail: a typo disappears in the round trip.
    broken = json.loads(json.dumps(find(objects, "Deployment", "ingest")))
    broken["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    assert _round_trip(broken) != broken


def test_every_object_carries_the_program_labels() -> None:
    objects = build(make_program(ingest={"maxReplicas": 4}))
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "gamify"
        assert labels["app.kubernetes.io/instance"] == PROGRAM
        assert labels["app.kubernetes.io/component"]
        assert labels["app.kubernetes.io/managed-by"] == "gamify-operator"
        assert labels["app.kubernetes.io/part-of"] == "gamify"
        assert labels["gamification.io/program"] == PROGRAM
        assert labels["gamification.io/tenant"] == "acme"
    for workload, template, _ in pod_specs(objects):
        assert template["metadata"]["labels"]["app.kubernetes.io/component"] == workload
        assert template["metadata"]["labels"]["gamification.io/tenant"] == "acme"


def test_namespace_enforces_restricted_pod_security() -> None:
    labels = build()[0]["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert labels["gamification.io/tenant"] == "acme"
    assert labels["app.kubernetes.io/managed-by"] == "gamify-operator"


# --- pods ---------------------------------------------------------------------------------------


def test_every_pod_and_container_is_restricted() -> None:
    objects = build()
    seen = set()
    for workload, _, spec in pod_specs(objects):
        seen.add(workload)
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == workload
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec.get("hostNetwork") is None and spec.get("hostPID") is None
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["runAsUser"] == 10001
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"requests", "limits"} <= set(container["resources"])
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts["/etc/gamify"]["readOnly"] is True
            assert "/tmp" in mounts  # the one writable place
    assert seen == {"ingest", "scoring", "snapshots"}
    for account in (o for o in objects if o["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_env_of_every_container_resolves_to_what_its_process_needs() -> None:
    program = make_program()
    config = OperatorConfig(bucket="gs://platform-snapshots", workload_env={"STORAGE_EMULATOR_HOST": "x"})
    objects = build(program, config)
    expected_args = {
        "ingest": ["run", "ingest"],
        "scoring": ["run", "scoring"],
        "snapshots": ["run", "snapshots", "--once"],
    }
    resolved = {}
    for workload, _, spec in pod_specs(objects):
        (container,) = spec["containers"]
        assert container["command"] + container["args"] == ["gamify", *expected_args[workload]]
        env = resolve_env(container, objects, NAMESPACE)
        files = mounted_files(spec, container, objects)
        assert env["GAMIFY_PROGRAM_FILE"] == PROGRAM_FILE
        loaded = parse_program(yaml.safe_load(files[env["GAMIFY_PROGRAM_FILE"]]))
        assert loaded == runtime_program(program)
        assert env["STORAGE_EMULATOR_HOST"] == "x"
        resolved[workload] = env
    assert resolved["ingest"]["GAMIFY_NATS_URL"] == NATS
    assert resolved["ingest"]["GAMIFY_API_KEY_HASHES"] == hash_api_key(KEY)
    assert resolved["ingest"]["GAMIFY_INGEST_HOST"] == "0.0.0.0"
    assert resolved["ingest"]["GAMIFY_INGEST_PORT"] == "8080"
    assert "GAMIFY_DATABASE_URL" not in resolved["ingest"]  # ingest never touches the database
    assert resolved["scoring"]["GAMIFY_NATS_URL"] == NATS
    assert resolved["scoring"]["GAMIFY_DATABASE_URL"] == DB_URL
    assert resolved["scoring"]["GAMIFY_METRICS_PORT"] == "9090"
    assert resolved["snapshots"]["GAMIFY_DATABASE_URL"] == DB_URL
    assert resolved["snapshots"]["GAMIFY_BUCKET"] == "gs://platform-snapshots"
    assert "GAMIFY_API_KEY_HASHES" not in resolved["scoring"] | resolved["snapshots"]


def test_workload_env_never_overrides_what_the_operator_sets() -> None:
    config = OperatorConfig(workload_env={"GAMIFY_NATS_URL": "nats://elsewhere:4222", "EXTRA": "1"})
    objects = build(config=config)
    container = find(objects, "Deployment", "ingest")["spec"]["template"]["spec"]["containers"][0]
    env = resolve_env(container, objects, NAMESPACE)
    assert env["GAMIFY_NATS_URL"] == NATS
    assert env["EXTRA"] == "1"


def test_no_plain_api_key_reaches_a_pod() -> None:
    objects = build_all(make_program(), OperatorConfig(), make_secrets(KEY, OLD_KEY))
    encoded = {
        KEY,
        OLD_KEY,
        base64.b64encode(KEY.encode()).decode(),
        base64.b64encode(OLD_KEY.encode()).decode(),
    }
    for obj in objects:
        if obj["kind"] in ("Deployment", "CronJob"):
            text = json.dumps(obj)
            assert not any(value in text for value in encoded), obj["metadata"]["name"]
    for workload, _, spec in pod_specs(objects):
        for item in spec["containers"][0]["env"]:
            ref = item.get("valueFrom", {}).get("secretKeyRef", {})
            if ref.get("name") == f"{PROGRAM}-api-keys":
                assert (workload, ref["key"]) == ("ingest", "api-key-hashes")


def test_api_keys_secret_holds_keys_for_the_manager_and_hashes_for_ingest() -> None:
    secret = api_keys_secret(make_program(), [KEY, OLD_KEY, KEY])
    data = secret["data"]
    assert secret["type"] == "Opaque"
    assert read_secret(data, "api-key") == KEY
    assert read_secret(data, "api-keys") == f"{KEY}\n{OLD_KEY}"
    assert read_secret(data, "api-key-hashes") == f"{hash_api_key(KEY)},{hash_api_key(OLD_KEY)}"
    with pytest.raises(ValueError):
        ProgramSecrets(api_keys=[], database_url=DB_URL, nats_url=NATS)


def test_database_and_nats_secrets() -> None:
    objects = build()
    database = find(objects, "Secret", f"{PROGRAM}-database")["data"]
    assert read_secret(database, "url") == DB_URL
    assert read_secret(database, "username") == "gamify_acme_2027"
    assert read_secret(database, "password") == "s3cret-pw"
    assert read_secret(database, "host") == "mysql.mysql.svc"
    assert read_secret(database, "port") == "3306"
    assert read_secret(database, "database") == "gamify_acme_2027"
    nats = find(objects, "Secret", f"{PROGRAM}-nats")["data"]
    assert read_secret(nats, "url") == NATS
    assert read_secret(nats, "credentials") is None  # per-program NATS users come later
    assert "password" not in repr(make_secrets()) and "s3cret" not in repr(make_secrets())


def test_merge_secret_keeps_what_the_live_secret_holds() -> None:
    desired = api_keys_secret(make_program(), ["gk_freshly-generated"])
    live = api_keys_secret(make_program(), [KEY])["data"] | {"extra": base64.b64encode(b"x").decode()}
    merged = merge_secret(desired, live)
    assert read_secret(merged["data"], "api-key") == KEY
    assert read_secret(merged["data"], "extra") == "x"
    assert merged["metadata"] == desired["metadata"]
    assert merge_secret(desired, None) == desired
    assert read_secret(desired["data"], "api-key") == "gk_freshly-generated"  # input untouched


def test_build_all_never_replaces_live_api_keys_and_rolls_on_what_it_keeps() -> None:
    live = {f"{PROGRAM}-api-keys": api_keys_secret(make_program(), [KEY])["data"]}
    fresh = ProgramSecrets(api_keys=["gk_generated-again"], database_url=DB_URL, nats_url=NATS)
    objects = build_all(make_program(), OperatorConfig(), fresh, existing_secrets=live)
    assert read_secret(find(objects, "Secret", f"{PROGRAM}-api-keys")["data"], "api-key") == KEY
    container = find(objects, "Deployment", "ingest")["spec"]["template"]["spec"]["containers"][0]
    assert resolve_env(container, objects, NAMESPACE)["GAMIFY_API_KEY_HASHES"] == hash_api_key(KEY)
    same = build_all(make_program(), OperatorConfig(), make_secrets(KEY))
    checksum = find(objects, "Deployment", "ingest")["spec"]["template"]["metadata"]["annotations"]
    assert checksum == find(same, "Deployment", "ingest")["spec"]["template"]["metadata"]["annotations"]


def test_secrets_checksum_rolls_only_the_pods_that_read_the_secret() -> None:
    def annotations(objects: list[dict], name: str) -> str:
        return find(objects, "Deployment", name)["spec"]["template"]["metadata"]["annotations"][
            ANNOTATION_SECRETS_CHECKSUM
        ]

    before = build_all(make_program(), OperatorConfig(), make_secrets(KEY))
    rotated = build_all(make_program(), OperatorConfig(), make_secrets(KEY, OLD_KEY))
    assert annotations(before, "ingest") != annotations(rotated, "ingest")
    assert annotations(before, "scoring") == annotations(rotated, "scoring")


# --- program config and its checksum ------------------------------------------------------------


def test_configmap_holds_the_program_and_pods_carry_its_checksum() -> None:
    program = make_program()
    objects = build(program)
    data = find(objects, "ConfigMap", f"{PROGRAM}-program")["data"]
    assert parse_program(yaml.safe_load(data["program.yaml"])) == runtime_program(program)
    for _, template, _ in pod_specs(objects):
        assert template["metadata"]["annotations"][ANNOTATION_CONFIG_CHECKSUM] == config_checksum(program)


def test_checksum_changes_with_what_processes_read_and_not_otherwise() -> None:
    base = config_checksum(make_program())
    assert len(base) == 64
    assert config_checksum(make_program()) == base
    # Read by the processes: a rollout.
    more_points = [{"id": "steps", "event": "activity.steps", "points": 11}]
    assert config_checksum(make_program(rules=more_points)) != base
    extended = make_program().spec.schedule.model_copy(
        update={"end": make_program().spec.schedule.end.replace(day=30)}
    )
    assert config_checksum(make_program(schedule=extended.model_dump(mode="json", by_alias=True))) != base
    assert config_checksum(make_program(suspend=True)) != base
    assert config_checksum(make_program(ingest={"rateLimit": {"requestsPerSecond": 5}})) != base
    # Not read by the processes: no rollout.
    assert config_checksum(make_program(ingest={"replicas": 7})) == base
    assert config_checksum(make_program(ingest={"minReplicas": 2, "maxReplicas": 9})) == base
    assert config_checksum(make_program(scoring={"replicas": 3})) == base
    assert config_checksum(make_program(snapshots={"schedule": "0 * * * *"})) == base
    live = make_program().model_copy(
        update={"metadata": make_program().metadata.model_copy(update={"resourceVersion": "991", "uid": "u"})}
    )
    assert config_checksum(live) == base
    assert (
        "resourceVersion" not in find(build(live), "ConfigMap", f"{PROGRAM}-program")["data"]["program.yaml"]
    )


# --- scaling and lifecycle ----------------------------------------------------------------------


def test_replicas_follow_the_spec_and_suspend_scales_ingest_to_zero() -> None:
    program = make_program(ingest={"replicas": 3}, scoring={"replicas": 2})
    objects = build(program)
    assert find(objects, "Deployment", "ingest")["spec"]["replicas"] == 3
    assert find(objects, "Deployment", "scoring")["spec"]["replicas"] == 2
    suspended = build(program, scaled_to_zero=True)
    assert find(suspended, "Deployment", "ingest")["spec"]["replicas"] == 0
    # Scoring keeps draining what was accepted; it has its own switch.
    assert find(suspended, "Deployment", "scoring")["spec"]["replicas"] == 2
    stopped = build(program, scoring_scaled_to_zero=True)
    assert find(stopped, "Deployment", "scoring")["spec"]["replicas"] == 0


def test_autoscaler_only_with_bounds_and_replicas_left_to_it() -> None:
    assert not [o for o in build() if o["kind"] == "HorizontalPodAutoscaler"]
    program = make_program(ingest={"replicas": 2, "minReplicas": 2, "maxReplicas": 8})
    objects = build(program)
    hpa = find(objects, "HorizontalPodAutoscaler", "ingest")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ingest"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # Created at the lower bound; afterwards the operator leaves `replicas` to the autoscaler.
    assert find(objects, "Deployment", "ingest")["spec"]["replicas"] == 2
    running = build(program, ingest_current_replicas=5)
    assert "replicas" not in find(running, "Deployment", "ingest")["spec"]
    # Suspended: no autoscaler (it would never scale up from zero anyway), zero replicas;
    # resumed: back at the lower bound.
    suspended = build(program, scaled_to_zero=True, ingest_current_replicas=5)
    assert not [o for o in suspended if o["kind"] == "HorizontalPodAutoscaler"]
    assert find(suspended, "Deployment", "ingest")["spec"]["replicas"] == 0
    assert ingest_replicas(program, scaled_to_zero=False, current=0) == 2


def test_one_bound_is_completed_from_replicas() -> None:
    only_max = build(make_program(ingest={"replicas": 3, "maxReplicas": 10}))
    hpa = find(only_max, "HorizontalPodAutoscaler", "ingest")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    only_min = build(make_program(ingest={"replicas": 2, "minReplicas": 4}))
    hpa = find(only_min, "HorizontalPodAutoscaler", "ingest")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (4, 4)


def test_disruption_budget_keeps_one_ingest_pod_when_there_are_several() -> None:
    many = find(build(make_program(ingest={"replicas": 3})), "PodDisruptionBudget", "ingest")["spec"]
    assert many["minAvailable"] == 1 and "maxUnavailable" not in many
    one = find(build(make_program(ingest={"replicas": 1})), "PodDisruptionBudget", "ingest")["spec"]
    assert one["maxUnavailable"] == 1 and "minAvailable" not in one
    scaled = find(
        build(make_program(ingest={"minReplicas": 2, "maxReplicas": 5})), "PodDisruptionBudget", "ingest"
    )
    assert scaled["spec"]["minAvailable"] == 1


def test_selectors_match_their_pods() -> None:
    objects = build(make_program(ingest={"maxReplicas": 3}))
    ingest = find(objects, "Deployment", "ingest")
    pod_labels = ingest["spec"]["template"]["metadata"]["labels"]
    for selector in (
        ingest["spec"]["selector"]["matchLabels"],
        find(objects, "Service", "ingest")["spec"]["selector"],
        find(objects, "PodDisruptionBudget", "ingest")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    scoring = find(objects, "Deployment", "scoring")
    assert not scoring["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_probes_grace_and_drain() -> None:
    objects = build()
    ingest = find(objects, "Deployment", "ingest")["spec"]["template"]["spec"]
    (container,) = ingest["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080, "scheme": "HTTP"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080, "scheme": "HTTP"}
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert ingest["terminationGracePeriodSeconds"] == 30
    scoring = find(objects, "Deployment", "scoring")["spec"]["template"]["spec"]
    assert scoring["terminationGracePeriodSeconds"] == 60
    assert scoring["containers"][0]["livenessProbe"]["httpGet"]["port"] == 9090
    service = find(objects, "Service", "ingest")["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]


def test_snapshot_cronjob() -> None:
    objects = build()
    cronjob = find(objects, "CronJob", "snapshots")["spec"]
    assert cronjob["schedule"] == "*/10 * * * *"
    assert cronjob["timeZone"] == "America/Sao_Paulo"
    assert cronjob["concurrencyPolicy"] == "Forbid"
    assert cronjob["suspend"] is False
    assert cronjob["startingDeadlineSeconds"] > 0
    assert cronjob["successfulJobsHistoryLimit"] >= 1 and cronjob["failedJobsHistoryLimit"] >= 1
    job = cronjob["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1 and job["activeDeadlineSeconds"] > 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    suspended = find(build(snapshots_suspended=True), "CronJob", "snapshots")
    assert suspended["spec"]["suspend"] is True


# --- namespace guard rails ----------------------------------------------------------------------


def test_quota_scales_with_the_program_and_fits_its_peak() -> None:
    small = find(build(make_program(ingest={"replicas": 1})), "ResourceQuota", "quota")["spec"]["hard"]
    big = find(
        build(make_program(ingest={"minReplicas": 2, "maxReplicas": 10}, scoring={"replicas": 3})),
        "ResourceQuota",
        "quota",
    )["spec"]["hard"]
    # ingest 1+1 surge, scoring 1+1 surge, one snapshot pod.
    assert small["pods"] == "5"
    # ingest max 10+1, scoring 3+1, one snapshot pod.
    assert big["pods"] == "16"
    config = OperatorConfig()
    ingest, scoring, snapshots = (config.resources_of(w) for w in ("ingest", "scoring", "snapshots"))
    assert ingest.requests["cpu"] == "100m" and scoring.requests["cpu"] == "200m"
    assert small["requests.cpu"] == "700m"  # 2*100m + 2*200m + 100m
    assert big["requests.cpu"] == "2"  # 11*100m + 4*200m + 100m
    assert small["limits.memory"] == "3Gi"  # 2*256Mi + 2*768Mi + 1Gi
    assert small["persistentvolumeclaims"] == "0" and small["services.loadbalancers"] == "0"
    assert snapshots.limits["memory"] == "1Gi"


def test_limit_range_defaults_and_ceiling() -> None:
    (limits,) = find(build(), "LimitRange", "limits")["spec"]["limits"]
    assert limits["type"] == "Container"
    assert limits["defaultRequest"] == {"cpu": "100m", "memory": "128Mi"}
    assert limits["max"] == {"cpu": "2", "memory": "1Gi"}  # scoring: its lane processes


def _policies(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}


def test_network_policies_deny_by_default_and_open_what_each_workload_needs() -> None:
    policies = _policies(build())
    deny = policies["default-deny"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    dns = policies["allow-dns"]
    assert dns["podSelector"] == {} and dns["policyTypes"] == ["Egress"]
    assert dns["egress"][0]["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
    ]
    assert {(p["protocol"], p["port"]) for p in dns["egress"][0]["ports"]} == {("UDP", 53), ("TCP", 53)}

    def components(spec: dict) -> set[str]:
        selector = spec["podSelector"]
        if "matchExpressions" in selector:
            return set(selector["matchExpressions"][0]["values"])
        return {selector["matchLabels"]["app.kubernetes.io/component"]}

    nats = policies["allow-nats"]
    assert components(nats) == {"ingest", "scoring"}
    assert nats["egress"][0]["ports"] == [{"protocol": "TCP", "port": 4222}]
    assert nats["egress"][0]["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "nats"
    }
    mysql = policies["allow-mysql"]
    assert components(mysql) == {"scoring", "snapshots"}
    assert mysql["egress"][0]["ports"] == [{"protocol": "TCP", "port": 3306}]
    storage = policies["allow-storage"]
    assert components(storage) == {"snapshots"}
    assert storage["egress"][0] == {
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
        "ports": [{"protocol": "TCP", "port": 443}],
    }
    ingest = policies["allow-ingest-http"]
    assert components(ingest) == {"ingest"} and ingest["policyTypes"] == ["Ingress"]
    assert ingest["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    assert "allow-scoring-metrics" not in policies
    for spec in policies.values():  # every selector stays inside this program's pods
        assert (
            spec["podSelector"] == {}
            or spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == PROGRAM
        )


def test_network_policies_follow_the_operator_config() -> None:
    config = OperatorConfig.from_env(
        {
            "GAMIFY_NATS_URL": "nats://nats.messaging.svc:4333",
            "GAMIFY_NATS_NAMESPACE": "messaging",
            "GAMIFY_NATS_POD_LABELS": "app.kubernetes.io/name=nats",
            "GAMIFY_MYSQL_URL": "mysql+pymysql://root:pw@10.20.0.5:3307/",
            "GAMIFY_MYSQL_CIDRS": "10.20.0.5/32",
            "GAMIFY_INGEST_FROM_NAMESPACES": "ingress-nginx",
            "GAMIFY_METRICS_FROM_NAMESPACES": "monitoring",
            "GAMIFY_METADATA_SERVER_EGRESS": "false",
        }
    )
    policies = _policies(build(config=config))
    nats = policies["allow-nats"]["egress"][0]
    assert nats["ports"] == [{"protocol": "TCP", "port": 4333}]
    assert nats["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "messaging"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}},
        }
    ]
    mysql = policies["allow-mysql"]["egress"][0]
    assert mysql == {
        "to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}],
        "ports": [{"protocol": "TCP", "port": 3307}],
    }
    assert policies["allow-ingest-http"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    metrics = policies["allow-scoring-metrics"]
    assert metrics["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9090}]
    assert len(policies["allow-storage"]["egress"]) == 1  # no metadata server rule


# --- ownership ----------------------------------------------------------------------------------


def test_owner_reference_shape_and_kopf_compatibility() -> None:
    objects = build(owner_meta=OWNER)
    expected = {
        "apiVersion": "gamification.io/v1alpha1",
        "kind": "GamificationProgram",
        "name": PROGRAM,
        "uid": OWNER["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for obj in objects:
        assert obj["metadata"]["ownerReferences"] == [expected]
    raw: Any = {"apiVersion": "gamification.io/v1alpha1", "kind": "GamificationProgram", "metadata": OWNER}
    body = kopf.Body(raw)
    assert dict(kopf.build_owner_reference(body)) == expected
    # kopf.adopt after owned: still one reference, names and namespaces kept.
    deployment = find(objects, "Deployment", "ingest")
    kopf.adopt(deployment, owner=body)
    assert deployment["metadata"]["ownerReferences"] == [expected]
    assert (deployment["metadata"]["name"], deployment["metadata"]["namespace"]) == ("ingest", NAMESPACE)
    assert owned(owned(deployment, OWNER), OWNER)["metadata"]["ownerReferences"] == [expected]
    with pytest.raises(ValueError):
        owned(deployment, {"name": PROGRAM})


def test_builders_do_not_share_mutable_state() -> None:
    first = build()
    first[0]["metadata"]["labels"]["tampered"] = "yes"
    find(first, "Deployment", "ingest")["spec"]["template"]["spec"]["containers"][0]["env"].clear()
    second = build()
    assert "tampered" not in second[0]["metadata"]["labels"]
    assert find(second, "Deployment", "ingest")["spec"]["template"]["spec"]["containers"][0]["env"]


# --- operator configuration ---------------------------------------------------------------------


def test_config_defaults() -> None:
    config = OperatorConfig.from_env({})
    assert config.nats_url == config.workload_nats_url == "nats://127.0.0.1:4222"
    assert config.mysql_admin_url == "mysql+pymysql://root@127.0.0.1:3306/"
    assert config.bucket.startswith("file://")
    assert config.image.startswith("ghcr.io/gamify/gamify:")
    assert config.image_pull_policy == "IfNotPresent"
    assert (config.nats_port, config.mysql_port) == (4222, 3306)
    assert config.nats.namespace == "nats" and config.mysql.namespace == "mysql"
    assert config.servers.nats_url == config.nats_url
    assert config.resources_of("ingest") == Resources(
        requests={"cpu": "100m", "memory": "128Mi"}, limits={"cpu": "1", "memory": "256Mi"}
    )


def test_config_from_env() -> None:
    config = OperatorConfig.from_env(
        {
            "GAMIFY_NATS_URL": "nats://nats.nats.svc:4222",
            "GAMIFY_WORKLOAD_NATS_URL": "nats://nats-internal:4222",
            "GAMIFY_BUCKET": "gs://snapshots",
            "GAMIFY_IMAGE_REPOSITORY": "registry.example/gamify",
            "GAMIFY_IMAGE_TAG": "1.2.3",
            "GAMIFY_IMAGE_PULL_POLICY": "Always",
            "GAMIFY_WORKLOAD_LOG_LEVEL": "debug",
            "GAMIFY_WORKLOAD_ENV": '{"GOOGLE_CLOUD_PROJECT": "acme-prod"}',
            "GAMIFY_RESOURCES": '{"scoring": {"limits": {"memory": "2Gi"}}}',
            "GAMIFY_SNAPSHOTS_GCP_SERVICE_ACCOUNT": "snap@acme.iam.gserviceaccount.com",
        }
    )
    assert config.image == "registry.example/gamify:1.2.3"
    assert config.image_pull_policy == "Always"
    assert config.log_level == "DEBUG"
    assert config.workload_nats_url == "nats://nats-internal:4222"
    assert config.resources_of("scoring").limits == {"cpu": "2", "memory": "2Gi"}
    assert config.resources_of("scoring").requests == {"cpu": "200m", "memory": "256Mi"}
    full = OperatorConfig.from_env({"GAMIFY_IMAGE": "gamify:dev", "GAMIFY_IMAGE_TAG": "ignored"})
    assert full.image == "gamify:dev"
    objects = build(config=config)
    account = find(objects, "ServiceAccount", "snapshots")
    assert account["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "snap@acme.iam.gserviceaccount.com"
    }
    assert "annotations" not in find(objects, "ServiceAccount", "ingest")["metadata"]
    container = find(objects, "Deployment", "scoring")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/gamify:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert resolve_env(container, objects, NAMESPACE)["GOOGLE_CLOUD_PROJECT"] == "acme-prod"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GAMIFY_IMAGE_PULL_POLICY", "Sometimes"),
        ("GAMIFY_NATS_PORT", "70000"),
        ("GAMIFY_MYSQL_PORT", "abc"),
        ("GAMIFY_NATS_CIDRS", "10.0.0.0/99"),
        ("GAMIFY_NATS_POD_LABELS", "novalue"),
        ("GAMIFY_WORKLOAD_ENV", "[1, 2]"),
        ("GAMIFY_WORKLOAD_ENV", "{not json"),
        ("GAMIFY_RESOURCES", '{"web": {}}'),
        ("GAMIFY_RESOURCES", '{"ingest": {"limits": {"cpu": "lots"}}}'),
        ("GAMIFY_RESOURCES", '{"ingest": {"limits": {"nvidia.com/gpu": "1"}}}'),
        ("GAMIFY_METADATA_SERVER_EGRESS", "maybe"),
        ("GAMIFY_SNAPSHOT_ACTIVE_DEADLINE", "0"),
    ],
)
def test_config_errors_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        OperatorConfig.from_env({variable: value})


def test_handler_settings_from_env() -> None:
    assert HandlerSettings.from_env({}) == HandlerSettings(30.0, 10.0, 3600.0, 5.0, None, None)
    settings = HandlerSettings.from_env(
        {
            "GAMIFY_OPERATOR_TIMER_INTERVAL": "1",
            "GAMIFY_OPERATOR_TIMER_IDLE": "0.5",
            "GAMIFY_OPERATOR_DRAIN_TIMEOUT": "60",
            "GAMIFY_OPERATOR_BACKOFF": "2.5",
            "GAMIFY_OPERATOR_WORKER_LIMIT": "4",
            "GAMIFY_OPERATOR_SELECTOR": "shard=a",
        }
    )
    assert settings == HandlerSettings(1.0, 0.5, 60.0, 2.5, 4, "shard=a")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GAMIFY_OPERATOR_TIMER_INTERVAL", "0"),
        ("GAMIFY_OPERATOR_TIMER_IDLE", "-1"),
        ("GAMIFY_OPERATOR_DRAIN_TIMEOUT", "an hour"),
        ("GAMIFY_OPERATOR_BACKOFF", "nan"),
        ("GAMIFY_OPERATOR_BACKOFF", "inf"),
        ("GAMIFY_OPERATOR_WORKER_LIMIT", "0"),
        ("GAMIFY_OPERATOR_WORKER_LIMIT", "two"),
    ],
)
def test_handler_settings_errors_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        HandlerSettings.from_env({variable: value})
