"""The `GamificationProgram` CustomResourceDefinition, generated from the pydantic model.

The `spec` schema is derived from `gamify.program.ProgramSpec` so that the API server and the
Python code can never disagree on field names, bounds, enums, patterns or defaults. What JSON
schema cannot say (cross-field checks, immutability) is added as CEL rules
(`x-kubernetes-validations`), keyed by model and field name below. The output is deterministic:
`crds/gamificationprograms.gamification.io.yaml` is committed, and a unit test fails when it
differs from what this module generates.

    python -m gamify_operator.crd            # print the CRD as YAML
    python -m gamify_operator.crd --write    # regenerate crds/… (make crds)
    python -m gamify_operator.crd --check    # exit 1 (with a diff) if crds/… is stale
"""

from __future__ import annotations

import argparse
import difflib
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from gamify import program
from gamify.program import ProgramSpec

GROUP = program.API_GROUP
VERSION = program.API_VERSION
KIND = program.KIND
PLURAL = "gamificationprograms"
SINGULAR = "gamificationprogram"
SHORT_NAMES = ["gp"]
CATEGORIES = ["gamification"]
CRD_NAME = f"{PLURAL}.{GROUP}"
MAX_NAME_LENGTH = 40  # owned names (stream, MySQL user) are built from the program id
PHASES = ["Provisioning", "Scheduled", "Active", "Ended", "Suspended", "Failed"]

# The committed output, relative to the repository this module lives in (operator/gamify_operator/).
CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / f"{CRD_NAME}.yaml"

HEADER = f"""\
# GENERATED FILE, do not edit: the {KIND} CRD, derived from gamify.program.ProgramSpec
# by operator/gamify_operator/crd.py. Regenerate with `make crds`
# (python -m gamify_operator.crd --write); tests/unit/test_crd_drift.py fails when it is stale.
"""

Validation = dict[str, str]
Schema = dict[str, Any]


class SchemaError(ValueError):
    """The model cannot be expressed as a structural CRD schema (a generator bug or a new type)."""


def _rule(
    rule: str,
    message: str = "",
    *,
    message_expression: str = "",
    field_path: str = "",
    reason: str = "",
) -> Validation:
    out = {"rule": rule}
    if message:
        out["message"] = message
    if message_expression:
        out["messageExpression"] = message_expression
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


# --- what JSON schema cannot say: CEL rules, keyed by pydantic model (its $defs name) --------------

_END_AFTER_START = "self.end > self.start"  # format: date-time strings are CEL timestamps

MODEL_RULES: dict[str, list[Validation]] = {
    "ProgramSpec": [
        _rule(
            "!has(self.badges) || self.badges.all(b, !has(b.rule) || self.rules.exists(r, r.id == b.rule))",
            # A static message: the API server refuses any messageExpression over these nested lists
            # as too costly. The path (spec.badges) and the words still say what is wrong.
            "spec.badges[].rule must name a rule id in spec.rules (a badge names an unknown rule)",
            field_path=".badges",
            reason="FieldValueInvalid",
        ),
        _rule(
            "!(has(self.mode) && self.mode == 'ranking' && has(self.rewards) && self.rewards.size() > 0)",
            "spec.rewards: mode `ranking` has no rewards: remove them or use mode `both`",
            field_path=".rewards",
            reason="FieldValueForbidden",
        ),
        _rule(
            "!(has(self.mode) && self.mode == 'rewards' && has(self.leaderboards)"
            " && self.leaderboards.size() > 0)",
            "spec.leaderboards: mode `rewards` has no leaderboards: remove them or use mode `both`",
            field_path=".leaderboards",
            reason="FieldValueForbidden",
        ),
    ],
    "Schedule": [
        _rule(
            _END_AFTER_START,
            "spec.schedule.end must be after spec.schedule.start",
            field_path=".end",
            reason="FieldValueInvalid",
        ),
    ],
    "Boost": [
        _rule(
            _END_AFTER_START,
            message_expression="'spec.boosts[].end: boost ' + self.name + ' must end after its start'",
            field_path=".end",
            reason="FieldValueInvalid",
        ),
    ],
    "Badge": [
        _rule(
            "has(self.minPoints) != (has(self.rule) || has(self.minCount))",
            message_expression=(
                "'spec.badges[]: badge ' + self.id + ' needs either minPoints, or rule with minCount'"
            ),
        ),
        _rule(
            "has(self.rule) == has(self.minCount)",
            message_expression="'spec.badges[]: badge ' + self.id + ' needs both rule and minCount'",
        ),
    ],
}

# Per field: CEL rules, and CRD-only tightening where the model checks with Python code.
FIELD_EXTRAS: dict[tuple[str, str], Schema] = {
    ("ProgramSpec", "tenant"): {
        "x-kubernetes-validations": [_rule("self == oldSelf", "spec.tenant is immutable")],
    },
    ("Rule", "event"): {
        "x-kubernetes-validations": [
            _rule(
                f"self != '{program.REDEEM_EVENT}'",
                f"spec.rules[].event: `{program.REDEEM_EVENT}` is reserved for reward redemption",
            )
        ],
    },
    ("Snapshots", "bucket"): {
        "x-kubernetes-validations": [
            _rule(
                "self.startsWith('gs://') || self.startsWith('file:///')",
                "spec.snapshots.bucket must be gs://bucket/prefix or file:///absolute/path",
            )
        ],
    },
    # The model checks the zone against the IANA database; the API server can at least refuse
    # what is no zone name at all (paths, spaces), before it reaches a container's environment.
    ("Schedule", "timezone"): {"pattern": r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$", "maxLength": 64},
}

SPEC_DESCRIPTION = (
    "The program: its tenant, schedule, scoring rules, boosts, badges, rewards and leaderboards,"
    " and how its services run. The resource name is the program id."
)

ROOT_RULES = [
    _rule(
        f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
        f"metadata.name (the program id) must be at most {MAX_NAME_LENGTH} characters",
        field_path=".metadata.name",
        reason="FieldValueInvalid",
    ),
    _rule(
        f"self.metadata.name.matches('{program.DNS_LABEL}')",
        "metadata.name (the program id) must be a DNS label: lowercase letters, digits and '-'",
        field_path=".metadata.name",
        reason="FieldValueInvalid",
    ),
]


# --- the status, written by the operator -----------------------------------------------------------


def _string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def status_schema() -> Schema:
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": _string("Component or aspect, e.g. Stream, Database, Ingest, Ready."),
            "status": _string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _string("CamelCase machine-readable reason of the last transition."),
            "message": _string("Human-readable details."),
            "lastTransitionTime": _string("When status last changed.", format="date-time"),
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "metadata.generation the condition was set for.",
            },
        },
    }
    extension = {
        "type": "object",
        "properties": {
            "previousEnd": _string("spec.schedule.end before the change.", format="date-time"),
            "newEnd": _string("spec.schedule.end after the change.", format="date-time"),
            "at": _string("When the operator saw the change.", format="date-time"),
        },
    }
    return {
        "type": "object",
        "description": "Observed state, written by the operator.",
        "properties": {
            "phase": _string("Where the program is in its life.", enum=PHASES),
            "conditions": {
                "type": "array",
                "description": "One condition per component (standard shape), keyed by type.",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "metadata.generation of the spec the status describes.",
            },
            "namespace": _string("Namespace that holds the program's workloads."),
            "ingestURL": _string("Where apps POST events."),
            "stream": _string("JetStream stream of the program's events."),
            "database": _string("MySQL schema (and user) of the program."),
            "snapshotURL": _string("Where the JSON snapshots are published."),
            "deadLetters": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "Events scoring gave up on, waiting to be replayed (gamify deadletters).",
            },
            "extensions": {
                "type": "array",
                "description": "History of changes to spec.schedule.end, oldest first.",
                "items": extension,
            },
        },
        # Kopf keeps its own bookkeeping (handler progress) under status: never prune it.
        "x-kubernetes-preserve-unknown-fields": True,
    }


# --- pydantic JSON schema -> structural OpenAPI v3 -------------------------------------------------


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from `root`, by the name pydantic gives it in `$defs`."""
    found: dict[str, type[BaseModel]] = {}

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ not in found:
                found[annotation.__name__] = annotation
                for field in annotation.model_fields.values():
                    visit(field.annotation)
            return
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
            for arg in typing.get_args(annotation):
                visit(arg)

    visit(root)
    return found


def _number(value: Any) -> Any:
    """1.0 -> 1: pydantic writes float bounds for Decimal fields; YAML reads better without."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _Converter:
    def __init__(self, root: type[BaseModel]):
        self.root = root
        self.json_schema = root.model_json_schema(by_alias=True, mode="validation")
        self.defs: dict[str, Schema] = self.json_schema.get("$defs", {})
        self.models = _models(root)
        self.used: set[object] = set()  # MODEL_RULES / FIELD_EXTRAS keys that matched

    def spec(self) -> Schema:
        return self.model(self.root.__name__, self.json_schema)

    def model(self, name: str, schema: Schema) -> Schema:
        cls = self.models[name]
        by_alias = {(f.alias or n): f for n, f in cls.model_fields.items()}
        properties: dict[str, Schema] = {}
        for prop, prop_schema in schema.get("properties", {}).items():
            node = self.node(prop_schema, where=f"{name}.{prop}")
            field = by_alias[prop]
            if "default" not in node and field.default_factory is not None:
                default = field.default_factory()  # type: ignore[call-arg]
                # An object defaults to {} and the API server then fills its fields' defaults;
                # an empty list stays absent (absent and empty mean the same to the model).
                if isinstance(default, BaseModel):
                    node["default"] = {}
                elif default:
                    raise SchemaError(f"{name}.{prop}: non-empty default_factory is not supported")
            if "pattern" in node and node["pattern"] == program.DURATION_PATTERN:
                node.setdefault("x-kubernetes-validations", []).append(
                    _rule("!self.matches('^(0+[dhms])+$')", f"{prop} must be a duration greater than zero")
                )
            if (name, prop) in FIELD_EXTRAS:
                self.used.add((name, prop))
            for key, value in FIELD_EXTRAS.get((name, prop), {}).items():
                if key == "x-kubernetes-validations":
                    node.setdefault(key, []).extend(value)
                else:
                    node[key] = value
            if not node.get("description"):
                raise SchemaError(f"{name}.{prop} has no description: add Field(description=...)")
            properties[prop] = node
        out: Schema = {"type": "object"}
        if schema.get("description"):
            out["description"] = schema["description"]
        if schema.get("required"):
            out["required"] = list(schema["required"])
        out["properties"] = properties
        if name in MODEL_RULES:
            self.used.add(name)
            out["x-kubernetes-validations"] = [dict(rule) for rule in MODEL_RULES[name]]
        return out

    def node(self, schema: Schema, where: str) -> Schema:
        schema = dict(schema)
        for dropped in ("title", "additionalProperties"):  # pruning does additionalProperties' job
            schema.pop(dropped, None)
        if "anyOf" in schema:
            options = [o for o in schema.pop("anyOf") if o != {"type": "null"}]
            if len(options) > 1 and sorted(o.get("type", "") for o in options) == ["number", "string"]:
                # Decimal: pydantic also accepts numeric strings; the CRD says number.
                options = [o for o in options if o.get("type") == "number"]
            if len(options) != 1:
                raise SchemaError(f"{where}: cannot express anyOf {options} structurally")
            # Optional[X] -> X (absent means None); siblings (description, default) win.
            return self.node({**options[0], **schema}, where)
        if "$ref" in schema:
            name = schema.pop("$ref").rsplit("/", 1)[-1]
            target = self.defs[name]
            base = self.model(name, target) if name in self.models else self.node(target, where)
            siblings = self.node(schema, where) if schema else {}
            siblings.pop("x-kubernetes-preserve-unknown-fields", None)
            return {**base, **siblings}
        if schema.get("default", ...) is None:
            del schema["default"]  # a null default is not allowed on a non-nullable field
        if "items" in schema:
            schema["items"] = self.node(schema["items"], f"{where}[]")
            item = schema["items"]
            if item.get("type") == "object" and "id" in item.get("required", []):
                # The API server itself refuses duplicate ids (and server-side apply merges by id).
                schema["x-kubernetes-list-type"] = "map"
                schema["x-kubernetes-list-map-keys"] = ["id"]
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            if bound in schema and not isinstance(schema[bound], bool):
                # JSON Schema 2020-12 numbers -> OpenAPI v3.0 booleans beside minimum/maximum.
                schema[bound.replace("exclusiveM", "m")] = schema.pop(bound)
                schema[bound] = True
        for key in ("minimum", "maximum"):
            if key in schema:
                schema[key] = _number(schema[key])
        if "type" not in schema:
            # typing.Any: any JSON value, kept as written.
            schema["x-kubernetes-preserve-unknown-fields"] = True
        return schema


def spec_schema() -> Schema:
    """The structural OpenAPI v3 schema of `spec`, from `ProgramSpec`."""
    converter = _Converter(ProgramSpec)
    spec = converter.spec()
    unused = (set(MODEL_RULES) | set(FIELD_EXTRAS)) - converter.used
    if unused:  # a renamed model or field must not silently lose its CEL rules
        raise SchemaError(f"CEL rules / extras for unknown models or fields: {sorted(map(str, unused))}")
    spec["description"] = SPEC_DESCRIPTION
    return spec


# --- the whole manifest ------------------------------------------------------------------------------

_KEY_ORDER = [
    "type",
    "format",
    "description",
    "default",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "required",
    "properties",
    "items",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
]


def _canonical(schema: Schema) -> Schema:
    """Schema keys in one fixed order (independent of pydantic's), recursively."""
    known = [k for k in _KEY_ORDER if k in schema]
    rest = sorted(k for k in schema if k not in _KEY_ORDER)
    out: Schema = {}
    for key in known + rest:
        value = schema[key]
        if key == "properties":
            value = {name: _canonical(prop) for name, prop in value.items()}
        elif key == "items":
            value = _canonical(value)
        out[key] = value
    return out


def _printer_columns() -> list[dict[str, Any]]:
    def column(name: str, path: str, kind: str = "string", priority: int = 0, description: str = "") -> Any:
        out: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
        if description:
            out["description"] = description
        if priority:
            out["priority"] = priority
        return out

    return [
        column("Tenant", ".spec.tenant", description="The employer that owns the program."),
        column("Mode", ".spec.mode", priority=1, description="ranking, rewards or both."),
        column("Phase", ".status.phase", description="Where the program is in its life."),
        column("Start", ".spec.schedule.start", description="When the program opens."),
        column("End", ".spec.schedule.end", description="When the program closes."),
        column(
            "Dead letters",
            ".status.deadLetters",
            kind="integer",
            description="Events scoring gave up on; gamify deadletters list shows them.",
        ),
        column("Ingest URL", ".status.ingestURL", priority=1, description="Where apps POST events."),
        column("Age", ".metadata.creationTimestamp", kind="date"),
    ]


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition as a plain dict, ready for `kubectl apply` or the API."""
    root: Schema = {
        "type": "object",
        "description": (
            f"A gamification program of one tenant. The name is the program id (a DNS label of at most"
            f" {MAX_NAME_LENGTH} characters); everything the program owns is named from it."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": _string("Versioned schema of this representation of an object."),
            "kind": _string("REST resource this object represents."),
            # Declared only so that the CEL rules below can point their errors at metadata.name.
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [dict(rule) for rule in ROOT_RULES],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/part-of": "gamify"}},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {"openAPIV3Schema": _canonical(root)},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key (as kubectl and most CRDs write them)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


def render_yaml() -> str:
    body = yaml.dump(crd_manifest(), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096)
    return HEADER + "---\n" + body


def _diff(expected: str, actual: str, path: Path) -> Iterator[str]:
    return difflib.unified_diff(
        actual.splitlines(keepends=True),
        expected.splitlines(keepends=True),
        fromfile=str(path),
        tofile="generated",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gamify_operator.crd", description=f"Generate the {KIND} CRD from the model."
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1 if the file differs from the output")
    action.add_argument("--write", action="store_true", help="write the file")
    parser.add_argument("--path", type=Path, default=CRD_PATH, help=f"default: {CRD_PATH}")
    args = parser.parse_args(argv)
    text = render_yaml()
    if args.write:
        args.path.parent.mkdir(parents=True, exist_ok=True)
        args.path.write_text(text)
        print(f"wrote {args.path}", file=sys.stderr)
        return 0
    if args.check:
        current = args.path.read_text() if args.path.exists() else ""
        if current == text:
            return 0
        sys.stderr.writelines(_diff(text, current, args.path))
        print(f"\n{args.path} is stale: run `make crds`", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
