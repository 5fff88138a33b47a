"""The CronJob `snapshots`: `gamify run snapshots --once` on the program's cron schedule.

The schedule is read in the program's time zone (`spec.schedule.timezone`), so "daily at
00:05" means the program's midnight. Runs never overlap (Forbid): a slow snapshot delays the
next rather than racing it on the same objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gamify.program import Program
from gamify_operator.builders import pods
from gamify_operator.builders.labels import SNAPSHOTS, ChildNames, labels, metadata
from gamify_operator.builders.secrets import DATABASE_URL
from gamify_operator.builders.workloads import pod_template
from gamify_operator.config import OperatorConfig

SUCCESSFUL_JOBS_KEPT = 3
FAILED_JOBS_KEPT = 3
BACKOFF_LIMIT = 2
GRACE_SECONDS = 30


def snapshots_cronjob(
    program: Program,
    config: OperatorConfig,
    secrets: Sequence[Mapping[str, Any]] = (),
    *,
    suspended: bool = False,
) -> dict[str, Any]:
    """`suspended`: no new runs (program suspended, or ended and its final snapshot written)."""
    names = ChildNames(program.name)
    container = pods.container(
        SNAPSHOTS,
        config,
        args=["run", SNAPSHOTS, "--once"],
        env=[
            pods.from_secret("GAMIFY_DATABASE_URL", names.database_secret, DATABASE_URL),
            # The bucket base when the program names none (`spec.snapshots.bucket` wins).
            pods.literal("GAMIFY_BUCKET", config.bucket),
        ],
    )
    spec = pods.pod_spec(
        program.name, SNAPSHOTS, [container], grace_seconds=GRACE_SECONDS, restartPolicy="Never"
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(program, SNAPSHOTS, SNAPSHOTS),
        "spec": {
            "schedule": program.spec.snapshots.schedule,
            "timeZone": program.spec.schedule.timezone,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": config.snapshot_starting_deadline_seconds,
            "successfulJobsHistoryLimit": SUCCESSFUL_JOBS_KEPT,
            "failedJobsHistoryLimit": FAILED_JOBS_KEPT,
            "suspend": suspended,
            "jobTemplate": {
                "metadata": {"labels": labels(program, SNAPSHOTS)},
                "spec": {
                    "backoffLimit": BACKOFF_LIMIT,
                    "activeDeadlineSeconds": config.snapshot_active_deadline_seconds,
                    "template": pod_template(program, SNAPSHOTS, spec, secrets),
                },
            },
        },
    }
