"""NetworkPolicies: deny everything, then open exactly what each workload needs.

- every pod: DNS (UDP and TCP 53) to the cluster DNS;
- ingest and scoring: NATS; scoring and snapshots: MySQL (ingest never touches the database);
- snapshots: object storage over HTTPS (and the GKE metadata server for Workload Identity);
- ingest: inbound HTTP on its container port, from the configured namespaces (else any source:
  the Service is ClusterIP, the cluster's ingress decides who reaches it);
- scoring: inbound metrics scrapes, only when namespaces for them are configured.

Destinations inside the cluster are chosen by namespace (see `gamify_operator.config`); the
kubelet's probes are host traffic, which NetworkPolicies never block.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gamify.program import Program
from gamify_operator.builders.labels import (
    COMPONENT_NETWORK,
    INGEST,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    SCORING,
    SNAPSHOTS,
    metadata,
    selector_labels,
)
from gamify_operator.config import OperatorConfig, Peer

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DNS_PORT = 53
# GKE Workload Identity: pods ask 169.254.169.254:80, which the node redirects to the
# gke-metadata-server on 169.254.169.252:988; both must be open under a default deny.
METADATA_SERVER = (("169.254.169.254/32", 80), ("169.254.169.252/32", 988))


def _policy(
    program: Program,
    name: str,
    pod_selector: dict[str, Any],
    *,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(program, name, COMPONENT_NETWORK),
        "spec": spec,
    }


def _pods(program: Program, *components: str) -> dict[str, Any]:
    if len(components) == 1:
        return {"matchLabels": selector_labels(program, components[0])}
    return {
        "matchLabels": {LABEL_INSTANCE: program.name},
        "matchExpressions": [{"key": LABEL_COMPONENT, "operator": "In", "values": list(components)}],
    }


def _namespaces(names: Iterable[str]) -> list[dict[str, Any]]:
    return [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}} for name in names]


def _peers(peer: Peer) -> list[dict[str, Any]]:
    if peer.cidrs:
        return [{"ipBlock": {"cidr": cidr}} for cidr in peer.cidrs]
    target: dict[str, Any] = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: peer.namespace}}}
    if peer.pod_labels:
        target["podSelector"] = {"matchLabels": dict(peer.pod_labels)}
    return [target]


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def default_deny(program: Program) -> dict[str, Any]:
    return _policy(program, "default-deny", {}, ingress=[], egress=[])


def allow_dns(program: Program, config: OperatorConfig) -> dict[str, Any]:
    destinations = _peers(Peer(namespace=config.dns.namespace, pod_labels=config.dns.pod_labels))
    destinations += [{"ipBlock": {"cidr": cidr}} for cidr in config.dns.cidrs]
    ports = [{"protocol": "UDP", "port": DNS_PORT}, _tcp(DNS_PORT)]
    return _policy(program, "allow-dns", {}, egress=[{"to": destinations, "ports": ports}])


def allow_nats(program: Program, config: OperatorConfig) -> dict[str, Any]:
    rule = {"to": _peers(config.nats), "ports": [_tcp(config.nats_port)]}
    return _policy(program, "allow-nats", _pods(program, INGEST, SCORING), egress=[rule])


def allow_mysql(program: Program, config: OperatorConfig) -> dict[str, Any]:
    rule = {"to": _peers(config.mysql), "ports": [_tcp(config.mysql_port)]}
    return _policy(program, "allow-mysql", _pods(program, SCORING, SNAPSHOTS), egress=[rule])


def allow_storage(program: Program, config: OperatorConfig) -> dict[str, Any]:
    rules = [
        {
            "to": [{"ipBlock": {"cidr": cidr}} for cidr in config.storage_cidrs],
            "ports": [_tcp(config.storage_port)],
        }
    ]
    if config.metadata_server_egress:
        rules += [
            {"to": [{"ipBlock": {"cidr": cidr}}], "ports": [_tcp(port)]} for cidr, port in METADATA_SERVER
        ]
    return _policy(program, "allow-storage", _pods(program, SNAPSHOTS), egress=rules)


def allow_ingest_http(program: Program, config: OperatorConfig) -> dict[str, Any]:
    rule: dict[str, Any] = {"ports": [_tcp(config.ingest_port)]}
    if config.ingest_from_namespaces:
        rule["from"] = _namespaces(config.ingest_from_namespaces)
    return _policy(program, "allow-ingest-http", _pods(program, INGEST), ingress=[rule])


def allow_scoring_metrics(program: Program, config: OperatorConfig) -> dict[str, Any] | None:
    if not config.metrics_from_namespaces:
        return None
    rule = {"from": _namespaces(config.metrics_from_namespaces), "ports": [_tcp(config.metrics_port)]}
    return _policy(program, "allow-scoring-metrics", _pods(program, SCORING), ingress=[rule])


def network_policies(program: Program, config: OperatorConfig) -> list[dict[str, Any]]:
    """Default deny first, then each allowance; names are stable so updates replace them."""
    policies = [
        default_deny(program),
        allow_dns(program, config),
        allow_nats(program, config),
        allow_mysql(program, config),
        allow_storage(program, config),
        allow_ingest_http(program, config),
    ]
    metrics = allow_scoring_metrics(program, config)
    return [*policies, metrics] if metrics else policies
