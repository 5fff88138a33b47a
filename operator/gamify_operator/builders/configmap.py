"""The ConfigMap `<program>-program`: the program YAML every process of the program reads.

It holds the program's name and spec only (never the live object's metadata or status, which
change on every write and would restart pods for nothing). `config_checksum` goes into the pod
templates so that a change the processes read (rules, dates, boosts, rate limits...) rolls the
pods; a change they never read (replica counts, the snapshot cron) does not.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gamify.program import Metadata, Program, dump_program
from gamify_operator.builders.labels import COMPONENT_CONFIG, ChildNames, metadata

PROGRAM_KEY = "program.yaml"
MOUNT_PATH = "/etc/gamify"
PROGRAM_FILE = f"{MOUNT_PATH}/{PROGRAM_KEY}"


def runtime_program(program: Program) -> Program:
    """The program as the processes see it: apiVersion, kind, metadata.name, spec."""
    return Program(metadata=Metadata(name=program.name), spec=program.spec)


def program_yaml(program: Program) -> str:
    return dump_program(runtime_program(program))


def _without_scaling(program: Program) -> Program:
    spec = program.spec
    return runtime_program(program).model_copy(
        update={
            "spec": spec.model_copy(
                update={
                    "ingest": spec.ingest.model_copy(
                        update={"replicas": 0, "min_replicas": None, "max_replicas": None}
                    ),
                    "scoring": spec.scoring.model_copy(update={"replicas": 0}),
                    "snapshots": spec.snapshots.model_copy(update={"schedule": ""}),
                }
            )
        }
    )


def config_checksum(program: Program) -> str:
    """sha256 of the program YAML, scale-only fields left out (see the module docstring)."""
    return hashlib.sha256(dump_program(_without_scaling(program)).encode("utf-8")).hexdigest()


def program_configmap(program: Program) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(program, ChildNames(program.name).program_configmap, COMPONENT_CONFIG),
        "data": {PROGRAM_KEY: program_yaml(program)},
    }
