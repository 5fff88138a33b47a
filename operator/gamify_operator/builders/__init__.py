"""Pure builders: one function per child object of a `GamificationProgram`.

Each takes the program (`gamify.program.Program`), the operator's configuration and the
values it needs, and returns a plain manifest dict; nothing here talks to a cluster, so every
object is unit-tested as data. The handlers apply what `build_all` returns.
"""

from __future__ import annotations

from gamify_operator.builders.children import build_all
from gamify_operator.builders.configmap import config_checksum, program_configmap, program_yaml
from gamify_operator.builders.labels import ChildNames, labels, selector_labels
from gamify_operator.builders.namespace import limit_range, namespace, resource_quota
from gamify_operator.builders.ownership import owned, owner_reference
from gamify_operator.builders.policies import network_policies
from gamify_operator.builders.scaling import autoscaling_bounds, ingest_replicas
from gamify_operator.builders.secrets import (
    ProgramSecrets,
    api_keys_secret,
    database_secret,
    merge_secret,
    nats_secret,
    program_secrets,
    read_secret,
)
from gamify_operator.builders.snapshots import snapshots_cronjob
from gamify_operator.builders.workloads import (
    ingest_autoscaler,
    ingest_deployment,
    ingest_disruption_budget,
    ingest_service,
    scoring_deployment,
    service_accounts,
)

__all__ = [
    "ChildNames",
    "ProgramSecrets",
    "api_keys_secret",
    "autoscaling_bounds",
    "build_all",
    "config_checksum",
    "database_secret",
    "ingest_autoscaler",
    "ingest_deployment",
    "ingest_disruption_budget",
    "ingest_replicas",
    "ingest_service",
    "labels",
    "limit_range",
    "merge_secret",
    "namespace",
    "nats_secret",
    "network_policies",
    "owned",
    "owner_reference",
    "program_configmap",
    "program_secrets",
    "program_yaml",
    "read_secret",
    "resource_quota",
    "scoring_deployment",
    "selector_labels",
    "service_accounts",
    "snapshots_cronjob",
]
