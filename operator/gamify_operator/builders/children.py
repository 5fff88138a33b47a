"""Every Kubernetes object of one program, in the order they should be applied."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gamify.program import Program
from gamify_operator.builders.configmap import program_configmap
from gamify_operator.builders.labels import ChildNames
from gamify_operator.builders.namespace import limit_range, namespace, resource_quota
from gamify_operator.builders.ownership import owned
from gamify_operator.builders.policies import network_policies
from gamify_operator.builders.secrets import ProgramSecrets, merge_secret, program_secrets
from gamify_operator.builders.snapshots import snapshots_cronjob
from gamify_operator.builders.workloads import (
    ingest_autoscaler,
    ingest_deployment,
    ingest_disruption_budget,
    ingest_service,
    scoring_deployment,
    service_accounts,
)
from gamify_operator.config import OperatorConfig


def build_all(
    program: Program,
    config: OperatorConfig,
    secrets: ProgramSecrets,
    *,
    existing_secrets: Mapping[str, Mapping[str, str]] | None = None,
    scaled_to_zero: bool = False,
    scoring_scaled_to_zero: bool = False,
    snapshots_suspended: bool = False,
    ingest_current_replicas: int | None = None,
    owner_meta: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The desired children of `program`: namespace first, then what pods need before pods.

    - `existing_secrets`: live Secret `data` by Secret name; the API keys Secret keeps what it
      already holds (keys are generated once). The database Secret is always rebuilt from
      `secrets.database_url`: the handler provisions with the stored password
      (`secrets.read_secret`), so the two agree.
    - `scaled_to_zero`: ingest at 0 replicas and no autoscaler (suspended, or past end + grace);
      `scoring_scaled_to_zero` likewise for scoring; `snapshots_suspended` suspends the CronJob.
    - `ingest_current_replicas`: the live ingest Deployment's replicas (see `ingest_replicas`).
    - `owner_meta`: the program's metadata; every object then carries its owner reference.

    Objects the list no longer holds (the autoscaler once bounds are removed, the metrics
    policy) are the handler's to delete: select them by the `gamification.io/program` label.
    """
    names = ChildNames(program.name)
    existing = existing_secrets or {}
    secret_objects = [
        merge_secret(secret, existing.get(names.api_keys_secret))
        if secret["metadata"]["name"] == names.api_keys_secret
        else secret
        for secret in program_secrets(program, secrets)
    ]
    objects: list[dict[str, Any] | None] = [
        namespace(program),
        resource_quota(program, config),
        limit_range(program, config),
        *network_policies(program, config),
        *service_accounts(program, config),
        *secret_objects,
        program_configmap(program),
        ingest_service(program, config),
        ingest_deployment(
            program,
            config,
            secret_objects,
            scaled_to_zero=scaled_to_zero,
            current_replicas=ingest_current_replicas,
        ),
        scoring_deployment(program, config, secret_objects, scaled_to_zero=scoring_scaled_to_zero),
        ingest_autoscaler(program, scaled_to_zero=scaled_to_zero),
        ingest_disruption_budget(program),
        snapshots_cronjob(program, config, secret_objects, suspended=snapshots_suspended),
    ]
    built = [obj for obj in objects if obj is not None]
    if owner_meta is not None:
        built = [owned(obj, owner_meta) for obj in built]
    return built
