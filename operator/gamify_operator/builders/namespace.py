"""The program's namespace and the guard rails inside it: ResourceQuota and LimitRange."""

from __future__ import annotations

from typing import Any

from gamify.program import Program
from gamify_operator.builders.labels import (
    COMPONENT_NAMESPACE,
    COMPONENT_QUOTA,
    ChildNames,
    labels,
    metadata,
)
from gamify_operator.builders.scaling import peak_pods
from gamify_operator.config import OperatorConfig, cpu_millis, format_cpu, format_memory, memory_bytes

POD_SECURITY_LEVEL = "restricted"
# Objects the program's own children need, with room for a rotation or a debug ConfigMap;
# `kube-root-ca.crt` is created in every namespace and counts too.
SECRETS_QUOTA = 10
CONFIGMAPS_QUOTA = 5
SERVICES_QUOTA = 2


def namespace(program: Program) -> dict[str, Any]:
    """`gamify-<program>`, enforcing the `restricted` Pod Security Standard."""
    pod_security = {
        f"pod-security.kubernetes.io/{mode}{suffix}": value
        for mode in ("enforce", "audit", "warn")
        for suffix, value in (("", POD_SECURITY_LEVEL), ("-version", "latest"))
    }
    meta = metadata(program, ChildNames(program.name).namespace, COMPONENT_NAMESPACE, namespaced=False)
    meta["labels"] = {**labels(program, COMPONENT_NAMESPACE), **pod_security}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _totals(program: Program, config: OperatorConfig) -> dict[str, str]:
    cpu_requests = cpu_limits = memory_requests = memory_limits = 0
    for workload, pods in peak_pods(program).items():
        resources = config.resources_of(workload)
        cpu_requests += pods * cpu_millis(resources.requests["cpu"])
        cpu_limits += pods * cpu_millis(resources.limits["cpu"])
        memory_requests += pods * memory_bytes(resources.requests["memory"])
        memory_limits += pods * memory_bytes(resources.limits["memory"])
    return {
        "requests.cpu": format_cpu(cpu_requests),
        "limits.cpu": format_cpu(cpu_limits),
        "requests.memory": format_memory(memory_requests),
        "limits.memory": format_memory(memory_limits),
    }


def resource_quota(program: Program, config: OperatorConfig) -> dict[str, Any]:
    """Room for the program's peak (autoscaler max, rollout surge, one snapshot job), no more.

    No PersistentVolumeClaims, LoadBalancers or NodePorts: a program exposes ingest through
    the cluster's ingress, and keeps its state in MySQL, NATS and the bucket.
    """
    hard = {
        "pods": str(sum(peak_pods(program).values())),
        **_totals(program, config),
        "services": str(SERVICES_QUOTA),
        "services.loadbalancers": "0",
        "services.nodeports": "0",
        "persistentvolumeclaims": "0",
        "secrets": str(SECRETS_QUOTA),
        "configmaps": str(CONFIGMAPS_QUOTA),
    }
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata(program, ChildNames(program.name).quota, COMPONENT_QUOTA),
        "spec": {"hard": hard},
    }


def limit_range(program: Program, config: OperatorConfig) -> dict[str, Any]:
    """Defaults for a container that states no resources, and a ceiling for every container."""
    default = config.resources_of("ingest")
    every = [config.resources_of(w) for w in ("ingest", "scoring", "snapshots")]
    ceiling = {
        "cpu": format_cpu(max(cpu_millis(r.limits["cpu"]) for r in every)),
        "memory": format_memory(max(memory_bytes(r.limits["memory"]) for r in every)),
    }
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": metadata(program, ChildNames(program.name).limit_range, COMPONENT_QUOTA),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "defaultRequest": dict(default.requests),
                    "default": dict(default.limits),
                    "max": ceiling,
                }
            ]
        },
    }
