"""The long-running workloads of a program: ingest and scoring, and what goes with them.

Both run the image's `gamify run <service>` (the same console script the one-machine mode
runs), configured by the same GAMIFY_* variables (`gamify.local.process_env`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gamify.nats_login import ENV_PASSWORD, ENV_USER
from gamify.program import Program
from gamify_operator.builders import pods
from gamify_operator.builders.configmap import config_checksum
from gamify_operator.builders.labels import (
    ANNOTATION_CONFIG_CHECKSUM,
    ANNOTATION_SECRETS_CHECKSUM,
    INGEST,
    SCORING,
    WORKLOADS,
    ChildNames,
    labels,
    metadata,
    selector_labels,
)
from gamify_operator.builders.scaling import autoscaling_bounds, ingest_replicas, ingest_steady_replicas
from gamify_operator.builders.secrets import (
    API_KEY_HASHES,
    DATABASE_URL,
    NATS_URL,
    data_checksum,
    nats_password_key,
    nats_user_key,
)
from gamify_operator.config import OperatorConfig

INGEST_GRACE_SECONDS = 30  # preStop 5s + uvicorn's 20s graceful shutdown, with room
INGEST_PRESTOP_SECONDS = 5  # endpoints controllers and proxies stop routing to the pod first
SCORING_GRACE_SECONDS = 60  # finish, commit and ack the batch in hand
CPU_TARGET_PERCENT = 70
SCALE_DOWN_STABILIZATION_SECONDS = 300
REVISION_HISTORY = 3
GCP_SERVICE_ACCOUNT_ANNOTATION = "iam.gke.io/gcp-service-account"


def service_account(program: Program, config: OperatorConfig, workload: str) -> dict[str, Any]:
    """One identity per workload, without an API token (no pod talks to the Kubernetes API)."""
    annotations = {}
    if workload == "snapshots" and config.snapshots_gcp_service_account:
        annotations[GCP_SERVICE_ACCOUNT_ANNOTATION] = config.snapshots_gcp_service_account
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(program, workload, workload, annotations=annotations),
        "automountServiceAccountToken": False,
    }


def service_accounts(program: Program, config: OperatorConfig) -> list[dict[str, Any]]:
    return [service_account(program, config, workload) for workload in WORKLOADS]


def referenced_secrets(pod_spec: Mapping[str, Any]) -> set[str]:
    names = set()
    for container in pod_spec.get("containers", []):
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
    return names


def pod_template(
    program: Program,
    component: str,
    spec: dict[str, Any],
    secrets: Sequence[Mapping[str, Any]],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Labels, and checksums that roll the pods when the program or a Secret they read changes."""
    used = referenced_secrets(spec)
    return {
        "metadata": {
            "labels": labels(program, component),
            "annotations": {
                ANNOTATION_CONFIG_CHECKSUM: config_checksum(program),
                ANNOTATION_SECRETS_CHECKSUM: data_checksum(
                    s for s in secrets if s["metadata"]["name"] in used
                ),
                **(annotations or {}),
            },
        },
        "spec": spec,
    }


def nats_env(program: Program, config: OperatorConfig, workload: str) -> list[dict[str, Any]]:
    """The NATS URL, and with NATS users the workload's own user and password, all from the
    program's NATS Secret (`gamify.nats_login.NatsLogin.from_env` reads them)."""
    secret = ChildNames(program.name).nats_secret
    env = [pods.from_secret("GAMIFY_NATS_URL", secret, NATS_URL)]
    if config.nats_users_enabled:
        env += [
            pods.from_secret(ENV_USER, secret, nats_user_key(workload)),
            pods.from_secret(ENV_PASSWORD, secret, nats_password_key(workload)),
        ]
    return env


def _scrape(port: int, path: str = "/metrics") -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": path}


def _http_probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _deployment(
    program: Program, name: str, replicas: int | None, template: dict[str, Any]
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "revisionHistoryLimit": REVISION_HISTORY,
        "selector": {"matchLabels": selector_labels(program, name)},
        # Never below the wanted capacity during a rollout: one new pod first, then one old out.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": template,
    }
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(program, name, name),
        "spec": spec,
    }


def ingest_deployment(
    program: Program,
    config: OperatorConfig,
    secrets: Sequence[Mapping[str, Any]] = (),
    *,
    scaled_to_zero: bool = False,
    current_replicas: int | None = None,
) -> dict[str, Any]:
    """`gamify run ingest`: the program's HTTP entry point.

    `scaled_to_zero` (suspended or ended) sets 0 replicas; `current_replicas` is the live
    Deployment's, so that with autoscaling `replicas` is written only when it must be
    (`scaling.ingest_replicas`). `secrets` are the program's Secret objects, for the checksum.
    """
    names = ChildNames(program.name)
    container = pods.container(
        INGEST,
        config,
        args=["run", INGEST],
        env=[
            *nats_env(program, config, INGEST),
            # Hashes only: the plain keys never reach a pod.
            pods.from_secret("GAMIFY_API_KEY_HASHES", names.api_keys_secret, API_KEY_HASHES),
            pods.literal("GAMIFY_INGEST_HOST", "0.0.0.0"),
            pods.literal("GAMIFY_INGEST_PORT", str(config.ingest_port)),
        ],
        ports=[{"name": "http", "containerPort": config.ingest_port, "protocol": "TCP"}],
        startupProbe=_http_probe("/healthz", config.ingest_port, period=2, failures=30),
        livenessProbe=_http_probe("/healthz", config.ingest_port, period=10, failures=3),
        readinessProbe=_http_probe("/readyz", config.ingest_port, period=5, failures=2),
        lifecycle={"preStop": {"sleep": {"seconds": INGEST_PRESTOP_SECONDS}}},
    )
    spread = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": selector_labels(program, INGEST)},
    }
    spec = pods.pod_spec(
        program.name,
        INGEST,
        [container],
        grace_seconds=INGEST_GRACE_SECONDS,
        topologySpreadConstraints=[spread],
    )
    template = pod_template(program, INGEST, spec, secrets, _scrape(config.ingest_port))
    replicas = ingest_replicas(program, scaled_to_zero, current_replicas)
    return _deployment(program, INGEST, replicas, template)


def scoring_deployment(
    program: Program,
    config: OperatorConfig,
    secrets: Sequence[Mapping[str, Any]] = (),
    *,
    scaled_to_zero: bool = False,
) -> dict[str, Any]:
    """`gamify run scoring`: workers on the program's durable consumer.

    Liveness is the Prometheus endpoint (`GAMIFY_METRICS_PORT`): scoring serves no HTTP API.
    """
    names = ChildNames(program.name)
    container = pods.container(
        SCORING,
        config,
        args=["run", SCORING],
        env=[
            *nats_env(program, config, SCORING),
            pods.from_secret("GAMIFY_DATABASE_URL", names.database_secret, DATABASE_URL),
            pods.literal("GAMIFY_METRICS_PORT", str(config.metrics_port)),
        ],
        ports=[{"name": "metrics", "containerPort": config.metrics_port, "protocol": "TCP"}],
        livenessProbe={
            **_http_probe("/metrics", config.metrics_port, period=20, failures=3),
            "initialDelaySeconds": 10,
        },
    )
    spec = pods.pod_spec(program.name, SCORING, [container], grace_seconds=SCORING_GRACE_SECONDS)
    template = pod_template(program, SCORING, spec, secrets, _scrape(config.metrics_port))
    replicas = 0 if scaled_to_zero else program.spec.scoring.replicas
    return _deployment(program, SCORING, replicas, template)


def ingest_service(program: Program, config: OperatorConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(program, INGEST, INGEST),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(program, INGEST),
            "ports": [
                {
                    "name": "http",
                    "port": config.ingest_service_port,
                    "targetPort": config.ingest_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def ingest_autoscaler(program: Program, *, scaled_to_zero: bool = False) -> dict[str, Any] | None:
    """CPU-based autoscaler of ingest, when `spec.ingest` sets bounds and ingest runs at all."""
    bounds = autoscaling_bounds(program)
    if bounds is None or scaled_to_zero:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(program, INGEST, INGEST),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": INGEST},
            "minReplicas": bounds.minimum,
            "maxReplicas": bounds.maximum,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT},
                    },
                }
            ],
            # Scale up at once (launch peaks), down slowly (bursty mobile clients come back).
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_STABILIZATION_SECONDS}},
        },
    }


def ingest_disruption_budget(program: Program) -> dict[str, Any]:
    """Keep one ingest pod up through voluntary disruptions when there is more than one."""
    budget: dict[str, Any] = (
        {"minAvailable": 1} if ingest_steady_replicas(program) > 1 else {"maxUnavailable": 1}
    )
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(program, INGEST, INGEST),
        "spec": {
            **budget,
            "selector": {"matchLabels": selector_labels(program, INGEST)},
            # A crash-looping pod must never block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
