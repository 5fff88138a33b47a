"""Pieces every pod of a program shares: security contexts, volumes, env, the container shape.

Pods meet the `restricted` Pod Security Standard: non-root (uid 10001), read-only root file
system (an emptyDir at /tmp for what must be written), no privilege escalation, no
capabilities, the runtime's default seccomp profile, no service account token (no pod talks
to the Kubernetes API). Every env value is literal or a `secretKeyRef`, so the same manifest
can be resolved and run as a local process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gamify_operator.builders.configmap import MOUNT_PATH, PROGRAM_FILE, PROGRAM_KEY
from gamify_operator.builders.labels import ChildNames
from gamify_operator.config import OperatorConfig

RUN_AS_USER = 10001
TMP_PATH = "/tmp"
TMP_SIZE_LIMIT = "64Mi"
PROGRAM_VOLUME = "program"
TMP_VOLUME = "tmp"
COMMAND = ["gamify"]


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def literal(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def from_secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def environment(config: OperatorConfig, specific: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The program file and log settings, the process's own variables, then the configured
    extras (`GAMIFY_WORKLOAD_ENV`) that do not override either."""
    env = [
        literal("GAMIFY_PROGRAM_FILE", PROGRAM_FILE),
        literal("GAMIFY_LOG_LEVEL", config.log_level),
        literal("PYTHONUNBUFFERED", "1"),
        literal("PYTHONDONTWRITEBYTECODE", "1"),  # the root file system is read-only
        *(dict(item) for item in specific),
    ]
    taken = {item["name"] for item in env}
    env += [literal(name, value) for name, value in sorted(config.workload_env.items()) if name not in taken]
    return env


def volumes(program: str) -> list[dict[str, Any]]:
    return [
        {
            "name": PROGRAM_VOLUME,
            "configMap": {
                "name": ChildNames(program).program_configmap,
                "items": [{"key": PROGRAM_KEY, "path": PROGRAM_KEY}],
            },
        },
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
    ]


def volume_mounts() -> list[dict[str, Any]]:
    # The whole folder, not a subPath: the kubelet then refreshes the file on ConfigMap updates
    # (the snapshot process re-reads it before every run).
    return [
        {"name": PROGRAM_VOLUME, "mountPath": MOUNT_PATH, "readOnly": True},
        {"name": TMP_VOLUME, "mountPath": TMP_PATH},
    ]


def container(
    name: str,
    config: OperatorConfig,
    *,
    args: Sequence[str],
    env: Sequence[Mapping[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": list(COMMAND),
        "args": list(args),
        "env": environment(config, env),
        "resources": config.resources_of(name).manifest(),
        "securityContext": container_security_context(),
        "volumeMounts": volume_mounts(),
    }
    spec.update(extra)
    return spec


def pod_spec(
    program: str,
    service_account: str,
    containers: Sequence[Mapping[str, Any]],
    *,
    grace_seconds: int,
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        # No Service env vars (INGEST_PORT=tcp://...): the environment stays exactly as built.
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": grace_seconds,
        "containers": [dict(c) for c in containers],
        "volumes": volumes(program),
    }
    spec.update(extra)
    return spec
