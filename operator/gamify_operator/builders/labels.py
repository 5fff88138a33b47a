"""Names, labels and metadata shared by every child object of a program.

Every object carries the recommended `app.kubernetes.io/*` labels plus the program and its
tenant, so `kubectl get all -A -l gamification.io/tenant=acme` finds a tenant's whole footprint.
Selectors use only the three labels that never change for a workload (name, instance,
component): a Deployment's selector is immutable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gamify.naming import ProgramNames
from gamify.program import Program

APP_NAME = "gamify"
MANAGED_BY = "gamify-operator"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_PROGRAM = "gamification.io/program"
LABEL_TENANT = "gamification.io/tenant"

ANNOTATION_CONFIG_CHECKSUM = "gamification.io/config-checksum"
ANNOTATION_SECRETS_CHECKSUM = "gamification.io/secrets-checksum"

# Components (the `app.kubernetes.io/component` label); the three workloads name their objects.
INGEST = "ingest"
SCORING = "scoring"
SNAPSHOTS = "snapshots"
WORKLOADS = (INGEST, SCORING, SNAPSHOTS)
COMPONENT_NAMESPACE = "namespace"
COMPONENT_QUOTA = "quota"
COMPONENT_NETWORK = "network-policy"
COMPONENT_CREDENTIALS = "credentials"
COMPONENT_CONFIG = "config"


@dataclass(frozen=True)
class ChildNames:
    """The Kubernetes names of a program's children (other owned names: `gamify.naming`)."""

    program: str

    @property
    def namespace(self) -> str:
        return ProgramNames(self.program).namespace

    @property
    def api_keys_secret(self) -> str:
        return f"{self.program}-api-keys"

    @property
    def database_secret(self) -> str:
        return f"{self.program}-database"

    @property
    def nats_secret(self) -> str:
        return f"{self.program}-nats"

    @property
    def program_configmap(self) -> str:
        return f"{self.program}-program"

    @property
    def quota(self) -> str:
        return "quota"

    @property
    def limit_range(self) -> str:
        return "limits"


def selector_labels(program: Program, component: str) -> dict[str, str]:
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: program.name, LABEL_COMPONENT: component}


def labels(program: Program, component: str) -> dict[str, str]:
    return {
        **selector_labels(program, component),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: APP_NAME,
        LABEL_PROGRAM: program.name,
        LABEL_TENANT: program.spec.tenant,
    }


def metadata(
    program: Program,
    name: str,
    component: str,
    *,
    namespaced: bool = True,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels(program, component)}
    if namespaced:
        meta["namespace"] = ChildNames(program.name).namespace
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta
