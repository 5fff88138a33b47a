"""The committed CRD is the generator's output, and the generator says what the model says.

No cluster needed: the API server side is tests/operator/test_crd.py. Here:
- `crds/gamificationprograms.gamification.io.yaml` equals `python -m gamify_operator.crd` (and
  `--check` says so), byte for byte, whatever the process' hash seed;
- the schema is structural (no anyOf/$ref/titles/additionalProperties; every node typed);
- walking the pydantic models directly (not their JSON schema, which the generator reads), every
  field is in the CRD with its description, required-ness, type, bounds, enum and default, and the
  CRD has no field the model lacks;
- the CRD's bounds refuse the model's invalid programs that are bounds (tests/unit/test_program.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from gamify.program import ProgramSpec
from gamify_operator import crd
from tests.unit import test_program

Schema = dict[str, Any]


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return crd.crd_manifest()


@pytest.fixture(scope="module")
def root_schema(manifest: dict[str, Any]) -> Schema:
    schema: Schema = manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


# --- the committed file ------------------------------------------------------------------------------


def test_committed_crd_is_the_generated_one() -> None:
    assert crd.CRD_PATH.exists(), f"{crd.CRD_PATH} is missing: run `make crds`"
    assert crd.CRD_PATH.read_text() == crd.render_yaml(), f"{crd.CRD_PATH} is stale: run `make crds`"


def test_check_command_passes_now_and_fails_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert crd.main(["--check"]) == 0
    stale = tmp_path / "crd.yaml"
    stale.write_text(crd.render_yaml().replace("gracePeriod", "gracePeriods", 1))
    assert crd.main(["--check", "--path", str(stale)]) == 1
    assert "make crds" in capsys.readouterr().err
    assert crd.main(["--check", "--path", str(tmp_path / "missing.yaml")]) == 1
    assert crd.main(["--write", "--path", str(stale)]) == 0
    assert crd.main(["--check", "--path", str(stale)]) == 0


@pytest.mark.parametrize("seed", ["1", "4242"])
def test_output_is_the_same_in_any_process(seed: str) -> None:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run(
        [sys.executable, "-m", "gamify_operator.crd"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == crd.render_yaml()


def test_header_says_it_is_generated_and_how_to_regenerate() -> None:
    head = crd.render_yaml().split("---\n", 1)[0]
    assert head.startswith("# GENERATED FILE, do not edit")
    assert "make crds" in head and "python -m gamify_operator.crd --write" in head
    document = yaml.safe_load(crd.render_yaml())
    assert document == crd.crd_manifest()


def test_names_scope_versions_and_columns(manifest: dict[str, Any]) -> None:
    spec = manifest["spec"]
    assert manifest["metadata"]["name"] == "gamificationprograms.gamification.io"
    assert (spec["group"], spec["scope"]) == ("gamification.io", "Cluster")
    assert spec["names"] == {
        "kind": "GamificationProgram",
        "listKind": "GamificationProgramList",
        "plural": "gamificationprograms",
        "singular": "gamificationprogram",
        "shortNames": ["gp"],
        "categories": ["gamification"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [(c["name"], c["jsonPath"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]]
    assert [c for c in columns if c[2] == 0] == [
        ("Tenant", ".spec.tenant", 0),
        ("Phase", ".status.phase", 0),
        ("Start", ".spec.schedule.start", 0),
        ("End", ".spec.schedule.end", 0),
        ("Dead letters", ".status.deadLetters", 0),
        ("Age", ".metadata.creationTimestamp", 0),
    ]


def test_status_schema(root_schema: Schema) -> None:
    status = root_schema["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True  # Kopf's bookkeeping survives
    assert status["properties"]["phase"]["enum"] == [
        "Provisioning",
        "Scheduled",
        "Active",
        "Ended",
        "Suspended",
        "Failed",
    ]
    condition = status["properties"]["conditions"]["items"]
    assert set(condition["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    for field in ("observedGeneration", "namespace", "ingestURL", "stream", "database", "snapshotURL"):
        assert field in status["properties"], field
    assert set(status["properties"]["extensions"]["items"]["properties"]) == {"previousEnd", "newEnd", "at"}


# --- structural -------------------------------------------------------------------------------------

FORBIDDEN = {"anyOf", "oneOf", "allOf", "not", "$ref", "$defs", "title", "additionalProperties", "nullable"}


def _nodes(schema: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from _nodes(prop, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")


def test_schema_is_structural(root_schema: Schema) -> None:
    for path, node in _nodes(root_schema, "(root)"):
        assert not FORBIDDEN & set(node), (path, FORBIDDEN & set(node))
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields") is True, path


def test_every_spec_and_status_field_has_a_description(root_schema: Schema) -> None:
    for part in ("spec", "status"):
        for path, node in _nodes(root_schema["properties"][part], part):
            if not path.endswith("[]"):  # list items are described by their list
                assert node.get("description"), f"{path} has no description"


def test_ids_are_list_map_keys(root_schema: Schema) -> None:
    spec = root_schema["properties"]["spec"]["properties"]
    for name in ("rules", "badges", "rewards", "leaderboards"):
        assert spec[name]["x-kubernetes-list-type"] == "map", name
        assert spec[name]["x-kubernetes-list-map-keys"] == ["id"], name


def test_cel_rules_cover_the_models_cross_field_checks(root_schema: Schema) -> None:
    spec = root_schema["properties"]["spec"]
    rules = {
        v["rule"] for _, node in _nodes(root_schema, "") for v in node.get("x-kubernetes-validations", [])
    }
    assert "self.end > self.start" in rules  # schedule and boosts
    assert "self == oldSelf" in spec["properties"]["tenant"]["x-kubernetes-validations"][0]["rule"]
    assert any(r == "self.metadata.name.size() <= 40" for r in rules)
    assert any("reward.redeem" in r for r in rules)
    assert any("self.rules.exists(r, r.id == b.rule)" in r for r in rules)
    assert any("'ranking'" in r for r in rules) and any("'rewards'" in r for r in rules)
    for _, node in _nodes(root_schema, ""):
        for validation in node.get("x-kubernetes-validations", []):
            assert validation.get("message") or validation.get("messageExpression"), validation


# --- the model, walked directly, against the CRD -------------------------------------------------------

# Where the CRD is deliberately stricter than the model's declared constraints (the model checks
# these with Python code the API server does not have).
CRD_ONLY: dict[str, set[str]] = {"spec.schedule.timezone": {"pattern", "maxLength"}}

BOUND_KEYS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "enum",
    "format",
)


def _optional_inner(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(args) == 1, annotation
        return args[0]
    return annotation


def _expected_bounds(field: FieldInfo, kind: str) -> Schema:
    out: Schema = {}
    for meta in field.metadata:
        for attr, key in (("ge", "minimum"), ("le", "maximum"), ("pattern", "pattern")):
            if getattr(meta, attr, None) is not None:
                out[key] = getattr(meta, attr)
        if getattr(meta, "gt", None) is not None:
            out["minimum"], out["exclusiveMinimum"] = meta.gt, True
        if getattr(meta, "lt", None) is not None:
            out["maximum"], out["exclusiveMaximum"] = meta.lt, True
        for attr, key in (("min_length", "min"), ("max_length", "max")):
            if getattr(meta, attr, None) is not None:
                out[f"{key}Items" if kind == "array" else f"{key}Length"] = getattr(meta, attr)
    if isinstance(field.json_schema_extra, dict) and "pattern" in field.json_schema_extra:
        out["pattern"] = field.json_schema_extra["pattern"]
    return out


def _type_of(annotation: Any) -> tuple[Schema, Any]:
    """(expected type keywords, the item/model annotation to recurse into)."""
    if annotation is Any:
        return {"x-kubernetes-preserve-unknown-fields": True}, None
    origin = typing.get_origin(annotation)
    if origin is list:
        return {"type": "array"}, typing.get_args(annotation)[0]
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return {"type": "object"}, annotation
        if issubclass(annotation, Enum):
            return {"type": "string", "enum": [member.value for member in annotation]}, None
        if issubclass(annotation, bool):
            return {"type": "boolean"}, None
        if issubclass(annotation, int):
            return {"type": "integer"}, None
        if issubclass(annotation, float | Decimal):
            return {"type": "number"}, None
        if issubclass(annotation, datetime):
            return {"type": "string", "format": "date-time"}, None
        if issubclass(annotation, str):
            return {"type": "string"}, None
    raise AssertionError(f"no CRD type for {annotation!r}")


def _expected_default(field: FieldInfo) -> Any:
    """What the CRD's `default` must be, or ... for none."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return {} if isinstance(value, BaseModel) else ...  # empty lists stay absent
    if field.is_required() or field.default is None:
        return ...
    return field.default.value if isinstance(field.default, Enum) else field.default


def _compare_model(model: type[BaseModel], node: Schema, path: str) -> Iterator[str]:
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    properties = node.get("properties", {})
    if set(fields) != set(properties):
        yield f"{path}: model fields {sorted(fields)} != CRD fields {sorted(properties)}"
    required = {alias for alias, f in fields.items() if f.is_required()}
    if required != set(node.get("required", [])):
        yield f"{path}: required {sorted(required)} != CRD {sorted(node.get('required', []))}"
    for alias, field in fields.items():
        if alias in properties:
            yield from _compare_field(field, properties[alias], f"{path}.{alias}")


def _compare_field(field: FieldInfo, node: Schema, path: str) -> Iterator[str]:
    if node.get("description") != field.description:
        yield f"{path}: description {node.get('description')!r} != model {field.description!r}"
    annotation = _optional_inner(field.annotation)
    expected, inner = _type_of(annotation)
    expected |= _expected_bounds(field, expected.get("type", ""))
    default = _expected_default(field)
    if default is not ...:
        expected["default"] = default
    keys = set(BOUND_KEYS) | {"type", "default", "x-kubernetes-preserve-unknown-fields"}
    actual = {k: v for k, v in node.items() if k in keys and k not in CRD_ONLY.get(path, set())}
    if actual != expected:
        yield f"{path}: CRD {actual} != model {expected}"
    if expected.get("type") == "object":
        yield from _compare_model(inner, node, path)
    elif expected.get("type") == "array":
        item_type, item_model = _type_of(inner)
        if item_type.get("type") == "object":
            yield from _compare_model(item_model, node["items"], f"{path}[]")
        elif node["items"].get("type") != item_type.get("type"):
            yield f"{path}[]: CRD items {node['items']} != model {item_type}"


def test_every_model_field_is_in_the_crd_as_the_model_says(root_schema: Schema) -> None:
    mismatches = list(_compare_model(ProgramSpec, root_schema["properties"]["spec"], "spec"))
    assert mismatches == [], "\n".join(mismatches)


def test_the_cross_check_notices_a_drift(root_schema: Schema) -> None:
    """The walk above is not vacuous: a changed bound, description or default is reported."""
    import copy

    spec = copy.deepcopy(root_schema["properties"]["spec"])
    spec["properties"]["rules"]["items"]["properties"]["points"]["maximum"] = 999
    spec["properties"]["schedule"]["properties"]["gracePeriod"]["default"] = "24h"
    spec["properties"]["tenant"]["description"] = "?"
    del spec["properties"]["suspend"]
    found = "\n".join(_compare_model(ProgramSpec, spec, "spec"))
    for path in ("spec.rules[].points", "spec.schedule.gracePeriod", "spec.tenant", "spec: model fields"):
        assert path in found, found


# --- the CRD's bounds refuse the model's invalid programs ---------------------------------------------


DATE_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"  # RFC 3339, offset required


def _violations(schema: Schema, value: Any, path: str) -> Iterator[str]:
    """The API server's schema checks for the keywords the generator emits (not CEL, not pruning)."""
    kind = schema.get("type")
    python_type = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            yield f"{path}: type"
            return
    elif kind in python_type and (
        not isinstance(value, python_type[kind]) or (kind == "integer" and isinstance(value, bool))
    ):
        yield f"{path}: type"
        return
    if "enum" in schema and value not in schema["enum"]:
        yield f"{path}: enum"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        yield f"{path}: pattern"
    if schema.get("format") == "date-time" and not re.fullmatch(DATE_TIME, value):
        yield f"{path}: format"
    for key, check in (
        ("minLength", lambda n: len(value) >= n),
        ("maxLength", lambda n: len(value) <= n),
        ("minItems", lambda n: len(value) >= n),
        ("maxItems", lambda n: len(value) <= n),
        ("minimum", lambda n: value > n if schema.get("exclusiveMinimum") else value >= n),
        ("maximum", lambda n: value < n if schema.get("exclusiveMaximum") else value <= n),
    ):
        if key in schema and not check(schema[key]):
            yield f"{path}: {key}"
    if kind == "object":
        for name in schema.get("required", []):
            if name not in value:
                yield f"{path}.{name}: required"
        for name, prop in schema.get("properties", {}).items():
            if name in value:
                yield from _violations(prop, value[name], f"{path}.{name}")
    if kind == "array":
        for index, item in enumerate(value):
            yield from _violations(schema["items"], item, f"{path}[{index}]")


# The model's invalid cases that are a plain schema bound: the CRD's schema must refuse each at the
# very field the model names. (The others are CEL rules and list-map keys: tests/operator checks
# those on the API server.)
BOUND_CASES = {
    "path as timezone",
    "bad duration",
    "bad retention duration",
    "multiplier zero",
    "multiplier negative",
    "negative points",
    "points true",
    "daily cap as text",
    "unit size as text",
    "multiplier as text",
    "suspend as text",
    "once per user as 1",
    "unit size zero",
    "zero daily cap",
    "event type with wildcard",
    "tenant not a DNS label",
    "tenant too long",
    "naive start",
    "naive boost end",
    "unknown mode",
    "unknown condition op",
    "bucket s3 scheme",
    "bucket http",
    "bucket relative file",
    "no rules",
    "no tenant",
    "size over limit",
}
CASES = {case: (mutate, where) for case, mutate, where, _ in test_program.INVALID}


def test_bound_cases_exist_in_the_models_tests() -> None:
    assert set(CASES) >= BOUND_CASES, BOUND_CASES - set(CASES)


def test_the_models_sample_has_no_violation(root_schema: Schema) -> None:
    document = test_program.sample_document()
    assert list(_violations(root_schema, document, "")) == []


@pytest.mark.parametrize("case", sorted(BOUND_CASES))
def test_crd_bounds_refuse_the_models_invalid_case_at_the_same_field(root_schema: Schema, case: str) -> None:
    mutate, where = CASES[case]
    document = test_program.sample_document()
    mutate(document)
    found = [v.split(": ")[0].lstrip(".") for v in _violations(root_schema, document, "")]
    assert where in found, (where, found)


# --- the generator refuses what it cannot express ---------------------------------------------------


def test_a_rule_for_a_renamed_field_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(crd.FIELD_EXTRAS, ("Rule", "eventType"), {"maxLength": 1})
    with pytest.raises(crd.SchemaError, match="eventType"):
        crd.spec_schema()


def test_a_field_without_description_is_an_error() -> None:
    class Undocumented(BaseModel):
        size: int = 3

    with pytest.raises(crd.SchemaError, match=r"Undocumented\.size has no description"):
        crd._Converter(Undocumented).spec()


def test_a_union_of_two_types_is_an_error() -> None:
    class Ambiguous(BaseModel):
        value: int | str = Field(description="either")

    with pytest.raises(crd.SchemaError, match="anyOf"):
        crd._Converter(Ambiguous).spec()
