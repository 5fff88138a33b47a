"""The Helm chart (charts/gamification-operator) with the REAL helm and a REAL API server.

- `helm lint --strict` with every ci/*-values.yaml; values.schema.json refuses bad values;
  every value in values.yaml is documented;
- `helm template` output is accepted by the API server (server-side dry-run apply, strict field
  validation: the pinned Kubernetes version's own schemas), for every ci/ variant;
- the chart's GamificationProgram CRD is byte-identical to the top-level crds/ one;
- the commands the chart, the Dockerfile and the operator's pod builders run are console scripts
  of the package and resolve in .venv/bin;
- `helm install` into the test control plane, then the operator runs with a token of the
  chart's ServiceAccount (so the API server authorizes it by the chart's ClusterRole, nothing
  more) and reconciles a program to Active with every child; `helm upgrade` changes the log
  level; `helm uninstall` leaves the CRD, the program and its data.

helm comes from the control-plane cache (scripts/controlplane, `make cluster-build`): missing,
the tests FAIL. Everything created is removed at the end (release, namespaces, the program, its
stream, schema, user and bucket prefix).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from sqlalchemy import create_engine, text

from gamify.naming import ProgramNames
from gamify.provisioning import deprovision
from gamify.settings import Servers
from gamify_operator import crd
from gamify_operator.builders.pods import COMMAND
from gamify_operator.kube import CHILD_KINDS
from tests.cluster import controlplane_lib, get_object, run, wait_until
from tests.conftest import unique_program_id
from tests.operator.test_operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gamification-operator"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RUN_LABEL = "gamification.io/test-run"
RUN = f"chart-{secrets.token_hex(3)}"
Doc = dict[str, Any]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
# Kinds that need CRDs the test cluster does not have (Prometheus Operator): checked by shape.
NOT_ON_TEST_CLUSTER = {("monitoring.coreos.com/v1", "PodMonitor")}


@pytest.fixture(scope="module")
def helm_binary() -> str:
    path = controlplane_lib("cp_bin helm")
    if not os.access(path, os.X_OK):
        pytest.fail(f"helm is missing at {path}: build it with `make cluster-build`")
    return path


@pytest.fixture(scope="module")
def admin_kubeconfig(request: pytest.FixtureRequest) -> str:
    """The `kubeconfig` fixture: path of the test cluster's admin kubeconfig."""
    path: str = request.getfixturevalue("kubeconfig")
    return path


@pytest.fixture(scope="module")
def admin_api(request: pytest.FixtureRequest) -> client.ApiClient:
    """The `kube_api` fixture: an admin client of the test cluster."""
    api: client.ApiClient = request.getfixturevalue("kube_api")
    return api


@pytest.fixture(scope="module")
def kctl(admin_kubeconfig: str) -> Kubectl:
    """The pinned kubectl, bound to the test cluster, with optional stdin."""
    binary = controlplane_lib("cp_bin kubectl")

    def invoke(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(binary, "--kubeconfig", admin_kubeconfig, *args, input=stdin, timeout=timeout)

    return invoke


@pytest.fixture(scope="module")
def chart_crds(kctl: Kubectl, request: pytest.FixtureRequest) -> None:
    """The chart's crds/ applied as Helm would (server-side; shared, never deleted: other
    sessions' programs live in them)."""
    request.getfixturevalue("gp_crd")
    ok(kctl("apply", "--server-side", "--field-manager=gamify-chart-tests", "-f", str(CHART / "crds")))
    ok(kctl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=30s"))


@pytest.fixture(scope="module")
def helm(helm_binary: str, admin_kubeconfig: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    def invoke(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run(helm_binary, "--kubeconfig", admin_kubeconfig, *args, timeout=timeout)

    return invoke


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def render(helm: Callable[..., Any], *args: str) -> list[Doc]:
    out = ok(helm("template", "r", str(CHART), "--namespace", "gamify-system", *args))
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[Doc], kind: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind]
    assert len(matches) == 1, f"{len(matches)} {kind}"
    return matches[0]


def container_env(deployment: Doc) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --- static checks --------------------------------------------------------------------------------


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == project["version"]


def test_chart_crd_is_byte_identical_to_top_level_crd() -> None:
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert top, "no top-level CRD"
    for name in top:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"charts/gamification-operator/crds/{name} drifted from crds/{name}: run `make crds`"
        )
    # The only other CRD is Kopf's peering one.
    extra = {p.name for p in (CHART / "crds").glob("*.yaml")} - set(top)
    assert extra == {"clusterkopfpeerings.kopf.dev.yaml"}


def test_commands_are_console_scripts_in_the_venv() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    chart_command = re.search(r"command: \[([\w-]+)\]", deployment)
    assert chart_command is not None
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r'^CMD \["([\w-]+)"', dockerfile, re.MULTILINE)
    assert cmd is not None
    assert re.search(r"^ENTRYPOINT \[\]$", dockerfile, re.MULTILINE)
    assert "USER 10001" in dockerfile
    used = {chart_command.group(1), cmd.group(1), *COMMAND}
    assert used == {"gamify", "gamify-operator"}
    for name in used:
        assert name in scripts, f"{name} is not a console script in pyproject.toml"
        binary = ROOT / ".venv" / "bin" / name
        assert binary.is_file() and os.access(binary, os.X_OK), f"{binary} missing"
        help_ = run(binary, "--help", timeout=60)
        assert help_.returncode == 0, help_.stderr
    assert "ingest" in run(ROOT / ".venv" / "bin" / "gamify", "run", "--help").stdout


def test_every_value_is_documented() -> None:
    """Each key of values.yaml has a comment right above it, or sits in a commented block."""
    undocumented = []
    documented_at: list[int] = []  # indents of the enclosing documented keys
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        key = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if key:
            indent = len(key.group(1))
            documented_at = [i for i in documented_at if i < indent]
            if previous.lstrip().startswith("#"):
                documented_at.append(indent)
            elif not documented_at and not line.rstrip().endswith(":"):
                undocumented.append(key.group(2))
        if line.strip():
            previous = line
    assert not undocumented, f"values without a comment: {undocumented}"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_lint_strict(helm: Callable[..., Any], values: Path) -> None:
    out = ok(helm("lint", "--strict", str(CHART), "-f", str(values)))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    "bad",
    [
        ["--set", "replicaCount=two"],
        ["--set", "logLevel=LOUD"],
        ["--set", "image.pullPolicy=Sometimes"],
        ["--set", "bucket=my-bucket"],
        ["--set", "replicaCount=0"],
        ["--set", "unknownOption=1"],
    ],
    ids=lambda a: a[1],
)
def test_schema_rejects_bad_values(helm: Callable[..., Any], bad: list[str]) -> None:
    result = helm("template", "r", str(CHART), "-f", str(CHART / "ci" / "default-values.yaml"), *bad)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def test_bucket_is_required(helm: Callable[..., Any]) -> None:
    result = helm("template", "r", str(CHART))
    assert result.returncode != 0 and "/bucket" in result.stderr


def test_standalone_with_one_replica_peering_with_more(helm: Callable[..., Any]) -> None:
    single = render(helm, "-f", str(CHART / "ci" / "default-values.yaml"))
    deployment = find(single, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--standalone" in args and not any(a.startswith("--peering") for a in args)
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert not [d for d in single if d["kind"] == "ClusterKopfPeering"]
    rules = find(single, "ClusterRole")["rules"]
    assert not [r for r in rules if "kopf.dev" in r["apiGroups"]]

    many = render(helm, "-f", str(CHART / "ci" / "default-values.yaml"), "--set", "replicaCount=3")
    deployment = find(many, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    peering = find(many, "ClusterKopfPeering")["metadata"]["name"]
    assert f"--peering={peering}" in args and "--standalone" not in args
    assert deployment["spec"]["replicas"] == 3
    kopf_rules = [r for r in find(many, "ClusterRole")["rules"] if "kopf.dev" in r["apiGroups"]]
    assert kopf_rules == [
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["clusterkopfpeerings"],
            "verbs": ["get", "list", "watch", "patch"],
        }
    ]


def test_nats_users_secret_gets_its_env_and_a_role_on_that_name_only(helm: Callable[..., Any]) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "full-values.yaml"))
    env = container_env(find(docs, "Deployment"))
    assert env["GAMIFY_NATS_USERS_SECRET"] == "nats/gamify-nats-users"
    role = find(docs, "Role")
    assert role["metadata"]["namespace"] == "nats"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["gamify-nats-users"],
         "verbs": ["get", "patch", "update"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]  # fmt: skip
    binding = find(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "nats"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gamify-operator-sa", "namespace": "gamify-system"}
    ]

    # Its own namespace when set; none of it without a name (a NATS without authorization).
    other = render(
        helm, "-f", str(CHART / "ci" / "default-values.yaml"),
        "--set", "nats.usersSecret.name=users", "--set", "nats.usersSecret.namespace=messaging",
    )  # fmt: skip
    assert container_env(find(other, "Deployment"))["GAMIFY_NATS_USERS_SECRET"] == "messaging/users"
    assert find(other, "Role")["metadata"]["namespace"] == "messaging"
    plain = render(helm, "-f", str(CHART / "ci" / "default-values.yaml"))
    assert "GAMIFY_NATS_USERS_SECRET" not in container_env(find(plain, "Deployment"))
    assert not [d for d in plain if d["kind"] in ("Role", "RoleBinding")]
    bad = helm(
        "template", "r", str(CHART), "-f", str(CHART / "ci" / "default-values.yaml"),
        "--set", "nats.usersSecret.name=Not_A_Name",
    )  # fmt: skip
    assert bad.returncode != 0 and "values don't meet the specifications of the schema" in bad.stderr


def test_deployment_is_hardened_and_maps_values_to_env(helm: Callable[..., Any]) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "full-values.yaml"))
    deployment = find(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert container["image"] == "registry.example.com/gamify/gamify:0.1.0"
    env = container_env(deployment)
    assert env["GAMIFY_MYSQL_URL"] == {"secretKeyRef": {"name": "gamify-mysql-admin", "key": "admin-url"}}
    assert env["GAMIFY_NATS_URL"] == {"secretKeyRef": {"name": "gamify-nats", "key": "url"}}
    assert env["GAMIFY_BUCKET"] == "gs://gamify-snapshots"
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/secrets/gcp/key.json"
    assert env["GAMIFY_IMAGE_REPOSITORY"] == "registry.example.com/gamify/gamify-workloads"
    assert env["GAMIFY_IMAGE_TAG"] == "0.1.0-debug"
    assert json.loads(env["GAMIFY_RESOURCES"]) == {
        "ingest": {"requests": {"cpu": "200m"}},
        "scoring": {"limits": {"memory": "1Gi"}},
    }
    assert env["GAMIFY_INGEST_FROM_NAMESPACES"] == "ingress-nginx,gateway"
    assert env["GAMIFY_METRICS_FROM_NAMESPACES"] == "monitoring"
    assert env["GAMIFY_SNAPSHOTS_GCP_SERVICE_ACCOUNT"].startswith("gamify-snapshots@")
    sa = find(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].startswith("gamify-operator@")
    monitor = find(docs, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "scoring"
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"

    # What the chart sets is exactly what the operator reads.
    from gamify_operator.config import OperatorConfig

    plain = {k: v for k, v in env.items() if isinstance(v, str)}
    # The URL comes from the Secret nats.existingSecret; with NATS users it names the admin.
    plain["GAMIFY_NATS_URL"] = "nats://admin:password@nats.nats.svc.cluster.local:4222"
    config = OperatorConfig.from_env(plain)
    assert config.image == "registry.example.com/gamify/gamify-workloads:0.1.0-debug"
    assert config.nats.cidrs == ("10.10.0.0/24",) and config.mysql.pod_labels == {
        "app.kubernetes.io/name": "mysql"
    }
    assert config.resources_of("ingest").requests["cpu"] == "200m"
    assert config.metadata_server_egress is False


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_rendered_objects_pass_server_side_dry_run(
    helm: Callable[..., Any], kctl: Kubectl, values: Path, chart_crds: None
) -> None:
    docs = render(helm, "-f", str(values))
    checked = [d for d in docs if (d["apiVersion"], d["kind"]) not in NOT_ON_TEST_CLUSTER]
    assert len(checked) >= 6
    namespace = f"dry-{secrets.token_hex(3)}"
    ok(kctl("create", "namespace", namespace))
    try:
        for doc in checked:
            if "namespace" in doc["metadata"]:
                doc["metadata"]["namespace"] = namespace
        result = kctl(
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            namespace,
            "-f",
            "-",
            stdin=yaml.safe_dump_all(checked),
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("(server dry run)") == len(checked), result.stdout
    finally:
        kctl("delete", "namespace", namespace, "--wait=false")


# --- install, run as the chart's ServiceAccount, upgrade, uninstall ----------------------------


class Release:
    """One release of the chart in its own namespace, and the program its operator handles."""

    def __init__(self, bucket: str) -> None:
        suffix = secrets.token_hex(3)
        self.name = f"gop-{suffix}"
        self.namespace = f"gop-{suffix}"
        # The release name does not contain the chart name: objects are <release>-<chart>.
        self.fullname = f"{self.name}-gamification-operator"
        self.bucket = bucket
        self.program = unique_program_id("chart")


def _remove_program(kctl: Kubectl, name: str) -> None:
    """The operator is gone by now: drop the finalizer, delete the program and its namespace."""
    kctl("patch", f"{crd.PLURAL}.{crd.GROUP}", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    kctl("delete", f"{crd.PLURAL}.{crd.GROUP}", name, "--ignore-not-found", "--wait=false")
    kctl("delete", "namespace", ProgramNames(name).namespace, "--ignore-not-found", "--wait=false")


@pytest.fixture(scope="module")
def release(
    helm: Callable[..., Any],
    kctl: Kubectl,
    chart_crds: None,
    mysql_admin_url: str,
    nats_url: str,
    gcs_client: Any,
) -> Iterator[Release]:
    bucket = gcs_client.create_bucket(f"chart-{secrets.token_hex(4)}")
    rel = Release(bucket.name)
    ok(kctl("create", "namespace", rel.namespace))
    ok(
        kctl(
            "create",
            "secret",
            "generic",
            "gamify-mysql-admin",
            "-n",
            rel.namespace,
            f"--from-literal=url={mysql_admin_url}",
        )
    )
    try:
        yield rel
    finally:
        helm("uninstall", rel.name, "-n", rel.namespace)
        _remove_program(kctl, rel.program)
        kctl("delete", "namespace", rel.namespace, "--wait=false")
        servers = Servers(nats_url=nats_url, mysql_admin_url=mysql_admin_url, bucket=f"gs://{rel.bucket}")
        asyncio.run(deprovision(rel.program, servers, f"gs://{rel.bucket}", delete_data=True))
        for blob in gcs_client.list_blobs(rel.bucket):
            blob.delete()
        bucket.delete()


_get = get_object  # the shared helper in tests/cluster.py


@pytest.fixture(scope="module")
def dyn(admin_api: client.ApiClient) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(admin_api)


def test_install(
    helm: Callable[..., Any], release: Release, dyn: dynamic.DynamicClient, nats_url: str
) -> None:
    out = ok(
        helm(
            "install",
            release.name,
            str(CHART),
            "-n",
            release.namespace,
            "--set",
            f"bucket=gs://{release.bucket}",
            "--set",
            f"nats.url={nats_url}",
            "--set",
            f"operator.selector={RUN_LABEL}={RUN}",
        )
    )
    assert "kubectl apply -f examples/" in out and "kubectl get gp" in out  # NOTES.txt
    assert _get(dyn, "apiextensions.k8s.io/v1", "CustomResourceDefinition", crd.CRD_NAME) is not None
    deployment = _get(dyn, "apps/v1", "Deployment", release.fullname, release.namespace)
    assert deployment is not None and deployment["spec"]["replicas"] == 1
    assert _get(dyn, "v1", "ServiceAccount", release.fullname, release.namespace) is not None
    assert _get(dyn, "v1", "Service", release.fullname, release.namespace) is not None
    role = _get(dyn, "rbac.authorization.k8s.io/v1", "ClusterRole", release.fullname)
    binding = _get(dyn, "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", release.fullname)
    assert role is not None and binding is not None
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": release.fullname, "namespace": release.namespace}
    ]


def _service_account_kubeconfig(admin_kubeconfig: str, token: str, path: Path) -> Path:
    """The admin kubeconfig's cluster, with the ServiceAccount's token as the only credential."""
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "operator-sa", "user": {"token": token}}],
        "contexts": [{"name": "operator-sa", "context": {"cluster": cluster["name"], "user": "operator-sa"}}],
        "current-context": "operator-sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# How the API server's refusals read in the operator's log: "... is forbidden: User ... cannot",
# aiohttp's "403, message='Forbidden'", the client's "(403)", Kopf's "Not enough permissions".
# Not a bare "403": random names and millisecond timestamps contain it.
REFUSAL = re.compile(r"forbidden|Not enough permissions|\(403\)|\b403, message", re.IGNORECASE)


def test_service_account_role_is_sufficient(
    release: Release,
    kctl: Kubectl,
    admin_kubeconfig: str,
    dyn: dynamic.DynamicClient,
    admin_api: client.ApiClient,
    nats_url: str,
    mysql_admin_url: str,
    tmp_path: Path,
) -> None:
    token = ok(kctl("create", "token", release.fullname, "-n", release.namespace, "--duration=1h")).strip()
    sa_config = _service_account_kubeconfig(admin_kubeconfig, token, tmp_path / "sa.kubeconfig")
    who = f"system:serviceaccount:{release.namespace}:{release.fullname}"
    # The chart's role and nothing more: no pods, no RBAC, no other CRDs' objects.
    for verb, resource, allowed in [
        ("create", "secrets", "yes"),
        ("patch", "gamificationprograms.gamification.io", "yes"),
        ("get", "pods", "no"),
        ("create", "roles.rbac.authorization.k8s.io", "no"),
        ("update", "deployments.apps", "no"),
    ]:
        answer = kctl("auth", "can-i", verb, resource, "--as", who, "-A").stdout.strip()
        assert answer == allowed, f"{verb} {resource}: {answer}"

    env = {
        **os.environ,
        "KUBECONFIG": str(sa_config),
        "GAMIFY_NATS_URL": nats_url,
        "GAMIFY_MYSQL_URL": mysql_admin_url,
        "GAMIFY_BUCKET": f"gs://{release.bucket}",
        "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
        "GAMIFY_OPERATOR_SELECTOR": f"{RUN_LABEL}={RUN}",
        "GAMIFY_OPERATOR_TIMER_INTERVAL": "1",
        "GAMIFY_OPERATOR_TIMER_IDLE": "0.5",
        "GAMIFY_OPERATOR_BACKOFF": "1",
        "GAMIFY_LOG_LEVEL": "INFO",
    }
    operator = OperatorProcess(env, tmp_path / "operator.log")
    operator.start()
    try:
        start = datetime.now(UTC) - timedelta(hours=1)
        program = {
            "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
            "kind": crd.KIND,
            "metadata": {"name": release.program, "labels": {RUN_LABEL: RUN}},
            "spec": {
                "tenant": "acme",
                "displayName": "Chart test",
                "schedule": {
                    "start": start.isoformat(timespec="seconds"),
                    "end": (start + timedelta(days=30)).isoformat(timespec="seconds"),
                },
                "rules": [{"id": "steps", "event": "activity.steps", "points": 10}],
                "leaderboards": [{"id": "global"}],
                "ingest": {"minReplicas": 1, "maxReplicas": 3},  # the autoscaler too: every kind
            },
        }
        programs = client.CustomObjectsApi(admin_api)
        programs.create_cluster_custom_object(crd.GROUP, crd.VERSION, crd.PLURAL, program)

        def active() -> Doc | None:
            body = _get(dyn, f"{crd.GROUP}/{crd.VERSION}", crd.KIND, release.program) or {}
            status = body.get("status") or {}
            ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
            done = status.get("phase") == "Active" and ready and ready[0]["status"] == "True"
            return body if done else None

        try:
            wait_until(f"{release.program} Active and Ready", active, timeout=90, interval=0.5)
        except pytest.fail.Exception:
            print(operator.log()[-6000:])
            raise
        namespace = ProgramNames(release.program).namespace
        selector = f"gamification.io/program={release.program}"
        for api_version, kind in CHILD_KINDS:
            resource = dyn.resources.get(api_version=api_version, kind=kind)
            found = dyn.get(
                resource, namespace=None if kind == "Namespace" else namespace, label_selector=selector
            ).items
            assert found, f"no {kind} of {release.program}"
        # Kopf posted its events (core/v1, namespace default) with the role's permission.
        events = client.CoreV1Api(admin_api).list_namespaced_event(
            "default", field_selector=f"involvedObject.name={release.program}"
        )
        assert events.items
        log = operator.log()
        if refusal := REFUSAL.search(log):
            around = log[max(0, refusal.start() - 2000) : refusal.end() + 2000]
            pytest.fail(f"the operator was refused: {around}")
    finally:
        operator.stop()


def test_upgrade_changes_the_log_level(
    helm: Callable[..., Any], release: Release, dyn: dynamic.DynamicClient
) -> None:
    ok(
        helm(
            "upgrade",
            release.name,
            str(CHART),
            "-n",
            release.namespace,
            "--reuse-values",
            "--set",
            "logLevel=DEBUG",
        )
    )
    deployment = _get(dyn, "apps/v1", "Deployment", release.fullname, release.namespace)
    assert deployment is not None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--log-level=DEBUG" in container["args"]
    assert container_env(deployment)["GAMIFY_LOG_LEVEL"] == "DEBUG"
    history = json.loads(ok(helm("history", release.name, "-n", release.namespace, "-o", "json")))
    assert [h["revision"] for h in history] == [1, 2] and history[-1]["status"] == "deployed"


def test_uninstall_keeps_crd_program_and_data(
    helm: Callable[..., Any], release: Release, dyn: dynamic.DynamicClient, mysql_admin_url: str
) -> None:
    ok(helm("uninstall", release.name, "-n", release.namespace))
    assert _get(dyn, "apps/v1", "Deployment", release.fullname, release.namespace) is None
    assert _get(dyn, "rbac.authorization.k8s.io/v1", "ClusterRole", release.fullname) is None
    assert _get(dyn, "apiextensions.k8s.io/v1", "CustomResourceDefinition", crd.CRD_NAME) is not None
    program = _get(dyn, f"{crd.GROUP}/{crd.VERSION}", crd.KIND, release.program)
    assert program is not None and program["status"]["phase"] == "Active"
    names = ProgramNames(release.program)
    assert _get(dyn, "v1", "Namespace", names.namespace) is not None
    engine = create_engine(mysql_admin_url)
    try:
        with engine.connect() as conn:
            schemas = conn.execute(text("SHOW DATABASES LIKE :name"), {"name": names.schema}).all()
    finally:
        engine.dispose()
    assert schemas, f"schema {names.schema} is gone"
