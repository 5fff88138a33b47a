"""Fuzzing GamificationProgram specs: mutations of the examples/ programs, in the local loader
(the pydantic model) and at the real Kubernetes API server (the CRD).

Hypothesis mutates a valid example: drops a field, puts a wrong or hostile value in one (wrong
types, bad dates, out-of-range numbers, huge strings), duplicates a list item (duplicate ids),
or adds an unknown field. Then:

- the model either accepts the spec or raises a pydantic ValidationError (never another
  exception), and `parse_program` names the field path of every error (`spec.rules[1].points`);
- a fixed sample of mutations goes to the API server (`dryRun=All`, strict field validation):
  what the model refuses, the server refuses naming the field; what the model accepts, the
  server accepts. The rules a CRD cannot express are listed in CRD_CANNOT_CHECK: those specs
  pass the API server and are caught by the model, which the operator runs on every program
  (it sets phase Failed with the message) and `gamify local up` / `gamify validate` run too.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from gamify.program import DNS_LABEL, Program, ProgramError, parse_program
from gamify_operator import crd
from tests.conftest import unique_program_id

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {
    path.stem: yaml.safe_load(path.read_text()) for path in sorted((ROOT / "examples").glob("*.yaml"))
}


# Known difference, in the safe direction (nothing reaches a running program unchecked):
# lax numbers: the model reads `true` as 1 and 2.0 as 2 for an integer field; the API server
# refuses both, so such a spec never reaches the operator. (Nulls agree: the model drops null
# fields as the API server prunes them.)
def known_difference(value: Any, model_accepts: bool) -> str | None:
    if isinstance(value, bool | float) and model_accepts:
        return "model coerces true/2.0 to an integer"
    return None


# What a CRD (OpenAPI schema + CEL) cannot decide; the model, run by the operator, does.
CRD_CANNOT_CHECK = {
    "spec.schedule.timezone": "IANA zone existence (no zone database in CEL)",
    "spec.rules[*].conditions[*]": "a condition value's type against its op (the value is any JSON)",
}

HOSTILE_VALUES: list[Any] = [
    None,
    "",
    "x",
    "Not A Label!",
    "a" * 300,
    -1,
    0,
    1,
    10**12,
    2.5,
    True,
    [],
    {},
    [1, 2],
    {"x": 1},
    "2027-02-30T00:00:00Z",
    "2027-01-01T00:00:00",
    "2027-13-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "yesterday",
    "0h",
    "-5m",
    "*/5 * * * *",
    "gs://UPPER/prefix",
    "file://relative",
]
NON_FINITE: list[Any] = [math.nan, math.inf, -math.inf]  # YAML's .nan/.inf: local loader only
_PATH_PART = re.compile(r"\[(\d+)\]")

Path_ = tuple[str | int, ...]


def _paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every field and list item below `node` (the spec and the program name)."""
    found: list[Path_] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*prefix, key))
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.append((*prefix, index))
            found.extend(_paths(value, (*prefix, index)))
    return found


def _parent(document: dict[str, Any], path: Path_) -> Any:
    node: Any = document
    for part in path[:-1]:
        node = node[part]
    return node


def dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


@st.composite
def mutated_programs(
    draw: st.DrawFn, values: list[Any] = HOSTILE_VALUES
) -> tuple[str, Path_, dict[str, Any]]:
    """(what was done, the path it was done at, the mutated document)."""
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    document = copy.deepcopy(EXAMPLES[name])
    document["metadata"] = {"name": document["metadata"]["name"]}
    targets = [p for p in _paths(document) if p[0] in ("spec", "metadata")]
    path = draw(st.sampled_from(targets))
    parent, key = _parent(document, path), path[-1]
    kind = draw(st.sampled_from(["drop", "set", "set", "set", "duplicate", "unknown"]))
    if kind == "drop":
        del parent[key]
    elif kind == "set":
        parent[key] = copy.deepcopy(draw(st.sampled_from(values)))
    elif kind == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    elif isinstance(parent[key], dict):
        parent[key]["unknownField"] = 1
        path = (*path, "unknownField")
    else:
        parent[key] = copy.deepcopy(draw(st.sampled_from(values)))
        kind = "set"
    return kind, path, document


def model_outcome(document: dict[str, Any]) -> str | None:
    """None when the model accepts the document, else its error message (field paths named)."""
    try:
        Program.model_validate(copy.deepcopy(document))
    except ValidationError:
        pass
    else:
        return None
    with pytest.raises(ProgramError) as raised:
        parse_program(copy.deepcopy(document))
    return str(raised.value)


def error_paths(message: str) -> list[str]:
    return [part.split(": ", 1)[0] for part in message.split("; ")]


def related(error_path: str, mutated: Path_) -> bool:
    """Whether an error names the mutated field, one of its ancestors, or something below it.

    Cross-field rules name the other end (a badge naming a dropped rule, a mode with rewards):
    those share the list or object the mutation touched, at least `spec.<field>`.
    """
    target = dotted(mutated)
    top = dotted(mutated[:2])
    return error_path.startswith(top) or target.startswith(error_path) or error_path.startswith(target)


CROSS_FIELD = ("spec.badges", "spec.rewards", "spec.leaderboards", "spec.schedule", "spec")


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(mutation=mutated_programs(HOSTILE_VALUES + NON_FINITE))
def test_every_invalid_spec_is_a_validation_error_naming_the_field(
    mutation: tuple[str, Path_, dict[str, Any]],
) -> None:
    kind, path, document = mutation
    message = model_outcome(document)  # any exception other than ValidationError fails here
    if message is None:
        return
    paths = error_paths(message)
    assert "(root)" not in paths, message
    for where in paths:
        assert where.split(".")[0].split("[")[0] in ("spec", "metadata"), message
    assert any(related(p, path) or p in CROSS_FIELD or p.startswith(CROSS_FIELD[:3]) for p in paths), (
        kind,
        dotted(path),
        message,
    )


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["spec.ingest.rateLimit.requestsPerSecond", "spec.rules.0.unit.size"]))
def test_non_finite_numbers_are_refused_by_the_local_loader(path: str) -> None:
    # YAML has .inf and .nan; JSON (so the API server) has neither: the loader must refuse them too.
    for value in NON_FINITE:
        document = copy.deepcopy(EXAMPLES["ranking-launch"])
        node: Any = document
        parts = [int(p) if p.isdigit() else p for p in path.split(".")]
        for part in parts[:-1]:
            node = node[part] if not isinstance(node, dict) else node.setdefault(part, {})
        node[parts[-1]] = value
        message = model_outcome(document)
        assert message is not None, f"{path} = {value} accepted by the model"
        named = _PATH_PART.sub(r".\1", error_paths(message)[0])
        assert named == path, message


# --- the same mutations at the API server ---------------------------------------------------------


def _cannot_check(message: str) -> bool:
    patterns = [re.escape(p).replace(r"\[\*\]", r"\[\d+\]") for p in CRD_CANNOT_CHECK]
    return all(any(re.match(p, where) for p in patterns) for where in error_paths(message))


def _server_outcome(programs: client.CustomObjectsApi, document: dict[str, Any]) -> str | None:
    """None when the API server would store the object, else its Status message."""
    body = copy.deepcopy(document)
    body.setdefault("metadata", {})
    name = body["metadata"].get("name") if isinstance(body["metadata"], dict) else None
    # A fresh name for a valid one (dry-run stores nothing; a mutated name is kept as it is).
    if isinstance(name, str) and re.fullmatch(DNS_LABEL, name) and len(name) <= 30:
        body["metadata"]["name"] = unique_program_id(name[:20])
    try:
        programs.create_cluster_custom_object(
            crd.GROUP, crd.VERSION, crd.PLURAL, body, dry_run="All", field_validation="Strict"
        )
    except ApiException as exc:
        if exc.status not in (400, 422):
            raise
        return str(json.loads(exc.body or "{}").get("message", exc))
    return None


def _value_at(document: dict[str, Any], path: Path_) -> Any:
    return _parent(document, path)[path[-1]]


def _sample(count: int) -> list[tuple[str, Path_, dict[str, Any]]]:
    """A fixed, reproducible sample of mutations (JSON-representable values only)."""
    sample: list[tuple[str, Path_, dict[str, Any]]] = []

    @seed(20270105)
    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutation=mutated_programs())
    def collect(mutation: tuple[str, Path_, dict[str, Any]]) -> None:
        sample.append(mutation)

    collect()
    return sample


def test_model_and_api_server_agree_on_mutated_specs(programs: client.CustomObjectsApi) -> None:
    disagreements: list[str] = []
    caught_by_operator: list[str] = []
    known: list[str] = []
    rejected_naming_field = 0
    for kind, path, document in _sample(80):
        model = model_outcome(document)
        server = _server_outcome(programs, document)
        where = f"{kind} {dotted(path)}"
        value = _value_at(document, path) if kind == "set" else "-"
        if (model is None) != (server is None) and (why := known_difference(value, model is None)):
            known.append(f"{where} = {value!r}: {why}")
        elif model is None and server is not None:
            disagreements.append(f"{where}: model accepts, API server refuses: {server}")
        elif model is not None and server is None:
            if _cannot_check(model):
                caught_by_operator.append(f"{where}: {model}")
            else:
                disagreements.append(f"{where}: model refuses ({model}), API server accepts")
        elif model is not None and server is not None:
            # The server names a field of the mutated object (its own spelling: spec.rules[1].points).
            if not (any(p in server for p in error_paths(model)) or dotted(path[:2]) in server):
                disagreements.append(f"{where}: API server message names no field: {server}")
            rejected_naming_field += 1
    print(
        json.dumps(
            {
                "sampled": 80,
                "rejected_by_both": rejected_naming_field,
                "caught_by_the_model_only": len(caught_by_operator),
                "known_differences": known,
            }
        )
    )
    assert not disagreements, "\n".join(disagreements)
    assert rejected_naming_field >= 20  # the sample really exercised rejections
