"""The `GamificationProgram` resource as one typed model.

The same YAML a user would `kubectl apply` is loaded here, by the operator, the services and
the one-machine CLI alike. The CRD schema in `crds/` must agree with this model; a test checks
that they do not drift. Validation errors name the field (e.g. `spec.rules[2].points`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

API_GROUP = "gamification.io"
API_VERSION = "v1alpha1"
KIND = "GamificationProgram"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
IDENTIFIER = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
# Event types end up in NATS subjects: no spaces, wildcards or empty tokens.
EVENT_TYPE = r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*$"
REDEEM_EVENT = "reward.redeem"

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """Parse `72h`, `90d`, `1h30m`, `45s` (Kubernetes-style, days allowed)."""
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise ValueError(f"invalid duration {text!r}: use e.g. 72h, 90d, 1h30m")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _check_duration(text: str) -> str:
    if parse_duration(text) <= timedelta(0):
        raise ValueError(f"duration {text!r} must be greater than zero")
    return text


def _not_a_number(value: Any) -> Any:
    # pydantic reads a number as Unix time (`start: 0` would be 1970); the API server refuses it.
    if isinstance(value, int | float):
        raise ValueError("must be an RFC 3339 time with an offset, e.g. 2027-01-01T00:00:00-03:00")
    return value


def _json_number(value: Any) -> Any:
    # pydantic's lax mode reads `true` as 1 and "10" as 10; the API server (JSON types) refuses both.
    if isinstance(value, bool | str):
        raise ValueError("must be a number, not true/false or text")
    return value


def _json_boolean(value: Any) -> Any:
    # Likewise "yes", "true" or 1 for a boolean: the API server refuses them, so the model does.
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _check_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must be an RFC 3339 time with an offset, e.g. 2027-01-01T00:00:00-03:00")
    return value


# The same grammar as parse_duration, for JSON schema / CRD readers only (pydantic keeps its own,
# friendlier check). RE2-compatible: no look-ahead, so the alternatives spell out "not empty".
DURATION_PATTERN = (
    r"^([0-9]+d([0-9]+h)?([0-9]+m)?([0-9]+s)?|[0-9]+h([0-9]+m)?([0-9]+s)?|[0-9]+m([0-9]+s)?|[0-9]+s)$"
)
Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    Field(max_length=32, json_schema_extra={"pattern": DURATION_PATTERN}),
]
# Numbers and booleans as JSON has them (so as the CRD's `integer`/`number`/`boolean` accept them).
Integer = Annotated[int, BeforeValidator(_json_number)]
# Not `Integer | None`: pydantic cannot place a Field's bounds inside that union (the CRD lost them).
OptionalInteger = Annotated[int | None, BeforeValidator(_json_number)]
Real = Annotated[float, BeforeValidator(_json_number)]
Boolean = Annotated[bool, BeforeValidator(_json_boolean)]
AwareTime = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_check_aware)]
Identifier = Annotated[str, Field(min_length=1, max_length=63, pattern=IDENTIFIER)]


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors (typos).

    No NaN/Infinity: YAML has `.inf`/`.nan`, but JSON (so the API server) cannot carry them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, allow_inf_nan=False
    )


class Mode(StrEnum):
    ranking = "ranking"
    rewards = "rewards"
    both = "both"


class Window(StrEnum):
    all_time = "all-time"
    weekly = "weekly"
    daily = "daily"


class OnDelete(StrEnum):
    retain = "Retain"
    delete = "Delete"


class Schedule(_Model):
    start: AwareTime = Field(description="When the program opens (RFC 3339).")
    end: AwareTime = Field(description="When the program closes (RFC 3339); edit it to extend.")
    timezone: str = Field(
        "UTC", description="IANA time zone: day boundaries for daily caps and daily/weekly boards."
    )
    grace_period: Duration = Field(
        "72h", description="How late an event that occurred inside the program may still arrive."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: e.g. a 300-char name
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _end_after_start(self) -> Schedule:
        if self.end <= self.start:
            raise ValueError("schedule.end must be after schedule.start")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def grace(self) -> timedelta:
        return parse_duration(self.grace_period)


class Unit(_Model):
    property: str = Field(min_length=1, max_length=64, description="Numeric event property.")
    size: Real = Field(gt=0, description="Points are awarded per `size` of the property.")


class ConditionOp(StrEnum):
    eq = "eq"
    ne = "ne"
    gt = "gt"
    gte = "gte"
    lt = "lt"
    lte = "lte"
    in_ = "in"
    exists = "exists"


class Condition(_Model):
    property: str = Field(min_length=1, max_length=64, description="Event property to test.")
    op: ConditionOp = Field(ConditionOp.eq, description="Comparison operator.")
    value: Any = Field(None, description="Value to compare with (a list for `in`).")

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        if self.op == ConditionOp.in_ and not isinstance(self.value, list):
            raise ValueError("`in` needs a list value")
        if self.op in (ConditionOp.gt, ConditionOp.gte, ConditionOp.lt, ConditionOp.lte) and (
            isinstance(self.value, bool) or not isinstance(self.value, int | float)
        ):
            raise ValueError(f"`{self.op.value}` needs a numeric value")
        return self


class Rule(_Model):
    id: Identifier = Field(description="Rule id, unique in the program.")
    event: str = Field(min_length=1, max_length=64, pattern=EVENT_TYPE, description="Event type.")
    points: Integer = Field(ge=0, le=1_000_000, description="Points per event (or per unit).")
    unit: Unit | None = Field(None, description="Award points per `size` of a numeric property.")
    daily_cap: OptionalInteger = Field(
        None, ge=1, description="Max points per user per day from this rule, after boosts."
    )
    once_per_user: Boolean = Field(False, description="At most one award per user, ever.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="All must hold for the rule to apply."
    )

    @field_validator("event")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == REDEEM_EVENT:
            raise ValueError(f"`{REDEEM_EVENT}` is reserved for reward redemption")
        return value


class Boost(_Model):
    name: Identifier = Field(description="Boost name.")
    start: AwareTime = Field(description="First instant the boost applies (by occurredAt).")
    end: AwareTime = Field(description="Instant the boost stops applying (exclusive).")
    # Exact decimal arithmetic in Python; a plain number in YAML/JSON (the CRD says `number`).
    multiplier: Annotated[
        Decimal, BeforeValidator(_json_number), PlainSerializer(float, return_type=float, when_used="json")
    ] = Field(gt=0, le=100, description="Points multiplier, e.g. 2 or 1.5.")

    @model_validator(mode="after")
    def _end_after_start(self) -> Boost:
        if self.end <= self.start:
            raise ValueError("boost end must be after its start")
        return self


class Badge(_Model):
    id: Identifier = Field(description="Badge id, unique in the program.")
    name: str = Field(min_length=1, max_length=120, description="Display name.")
    min_points: OptionalInteger = Field(None, ge=1, description="Awarded when total earned reaches it.")
    rule: str | None = Field(None, max_length=63, description="Rule whose award count is the threshold.")
    min_count: OptionalInteger = Field(None, ge=1, description="Awards of `rule` needed.")

    @model_validator(mode="after")
    def _one_threshold(self) -> Badge:
        by_points = self.min_points is not None
        by_rule = self.rule is not None or self.min_count is not None
        if by_points == by_rule:
            raise ValueError("a badge needs either minPoints, or rule with minCount")
        if by_rule and (self.rule is None or self.min_count is None):
            raise ValueError("a rule badge needs both rule and minCount")
        return self


class Reward(_Model):
    id: Identifier = Field(description="Reward id, unique in the program.")
    name: str = Field(min_length=1, max_length=120, description="Display name.")
    cost: Integer = Field(ge=1, description="Points spent to redeem it.")
    stock: OptionalInteger = Field(None, ge=0, description="Units available; unlimited when absent.")
    per_user_limit: OptionalInteger = Field(None, ge=1, description="Max redemptions per user.")


class Leaderboard(_Model):
    id: Identifier = Field(description="Board id, unique in the program.")
    window: Window = Field(Window.all_time, description="all-time, weekly (ISO week) or daily.")
    size: Integer = Field(100, ge=1, le=10_000, description="Entries published in the board.")


class Snapshots(_Model):
    schedule: str = Field("*/5 * * * *", description="Cron schedule of the snapshot job.")
    bucket: str | None = Field(
        None,
        pattern=r"^(gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\s]*)?|file:///[^\s]*)$",
        description="gs://bucket/prefix or file:///path; the platform default when absent.",
    )


class RateLimit(_Model):
    requests_per_second: Real = Field(50, gt=0, description="Sustained requests per API key.")
    burst: Integer = Field(100, ge=1, description="Requests a key may send at once.")


class Ingest(_Model):
    replicas: Integer = Field(2, ge=0, le=100, description="Ingest replicas (without autoscaling).")
    min_replicas: OptionalInteger = Field(None, ge=1, description="Autoscaling lower bound.")
    max_replicas: OptionalInteger = Field(None, ge=1, le=100, description="Autoscaling upper bound.")
    rate_limit: RateLimit = Field(default_factory=RateLimit, description="Per-key rate limit.")


class Scoring(_Model):
    replicas: Integer = Field(1, ge=0, le=50, description="Scoring workers on the durable consumer.")


class Retention(_Model):
    events_max_age: Duration = Field("90d", description="How long the stream keeps events.")
    on_delete: OnDelete = Field(
        OnDelete.retain, description="Retain keeps stream, schema and objects; Delete removes them."
    )


class FieldError(ValueError):
    """A cross-field check that knows which field is wrong.

    A model validator's error is located at the model itself (e.g. `spec`); `where` is the
    path below it (e.g. `("rules", 1, "id")`) so the message can name `spec.rules[1].id`.
    """

    def __init__(self, where: tuple[int | str, ...], message: str):
        super().__init__(message)
        self.where = where


def _unique(items: list[Any], what: str, field: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        key = item.id
        if key in seen:
            raise FieldError((field, index, "id"), f"duplicate {what} id {key!r}")
        seen.add(key)


class ProgramSpec(_Model):
    tenant: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Employer id; immutable.")
    display_name: str = Field("", max_length=200, description="Human-readable program name.")
    schedule: Schedule = Field(description="When the program runs, and in which time zone.")
    mode: Mode = Field(Mode.both, description="ranking, rewards or both.")
    rules: list[Rule] = Field(
        min_length=1, max_length=200, description="How events earn points; ids are unique."
    )
    boosts: list[Boost] = Field(
        default_factory=list, max_length=50, description="Time windows whose multipliers stack."
    )
    badges: list[Badge] = Field(
        default_factory=list, max_length=200, description="Achievements, awarded once; ids are unique."
    )
    rewards: list[Reward] = Field(
        default_factory=list, max_length=500, description="Catalog points are spent on; ids are unique."
    )
    leaderboards: list[Leaderboard] = Field(
        default_factory=list, max_length=20, description="Published rankings; ids are unique."
    )
    snapshots: Snapshots = Field(
        default_factory=Snapshots, description="Where and how often JSON snapshots are published."
    )
    ingest: Ingest = Field(default_factory=Ingest, description="The program's HTTP entry point.")
    scoring: Scoring = Field(default_factory=Scoring, description="The scoring workers.")
    retention: Retention = Field(
        default_factory=Retention, description="How long events are kept, and what deletion removes."
    )
    suspend: Boolean = Field(False, description="Stop accepting events without deleting anything.")

    @model_validator(mode="after")
    def _consistent(self) -> ProgramSpec:
        _unique(self.rules, "rule", "rules")
        _unique(self.badges, "badge", "badges")
        _unique(self.rewards, "reward", "rewards")
        _unique(self.leaderboards, "leaderboard", "leaderboards")
        rule_ids = {rule.id for rule in self.rules}
        for index, badge in enumerate(self.badges):
            if badge.rule is not None and badge.rule not in rule_ids:
                raise FieldError(
                    ("badges", index, "rule"), f"badge {badge.id!r} names unknown rule {badge.rule!r}"
                )
        if self.mode == Mode.ranking and self.rewards:
            raise FieldError(("rewards",), "mode `ranking` has no rewards: remove them or use mode `both`")
        if self.mode == Mode.rewards and self.leaderboards:
            raise FieldError(
                ("leaderboards",), "mode `rewards` has no leaderboards: remove them or use mode `both`"
            )
        return self

    def rules_for(self, event_type: str) -> list[Rule]:
        return [rule for rule in self.rules if rule.event == event_type]

    def reward(self, reward_id: str) -> Reward | None:
        return next((r for r in self.rewards if r.id == reward_id), None)


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL)


class Program(BaseModel):
    """A whole resource: apiVersion, kind, metadata.name (the program id) and spec."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")
    # Literal defaults spelled out (not API_GROUP/KIND, which are plain str) so mypy agrees.
    api_version: Literal["gamification.io/v1alpha1"] = Field("gamification.io/v1alpha1", alias="apiVersion")
    kind: Literal["GamificationProgram"] = "GamificationProgram"
    metadata: Metadata
    spec: ProgramSpec

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, document: Any) -> Any:
        # The API server prunes null fields before it validates or stores an object, so
        # `rewards:` left empty in YAML means "absent" to kubectl; read it the same way here.
        return _without_nulls(document)

    @property
    def name(self) -> str:
        return self.metadata.name


def _without_nulls(node: Any, *, schemaless: bool = False) -> Any:
    """`node` with null-valued keys removed from every mapping, as the API server prunes them;
    not inside a condition's `value`, whose content the CRD keeps as it is."""
    if isinstance(node, dict):
        return {
            key: _without_nulls(value, schemaless=schemaless or key == "value")
            for key, value in node.items()
            if value is not None or schemaless
        }
    if isinstance(node, list):
        return [_without_nulls(item, schemaless=schemaless) for item in node]
    return node


class ProgramError(ValueError):
    """A program file or resource that cannot be used; the message names each bad field."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def describe_errors(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            loc += cause.where
        where = _field_path(loc)
        if prefix:
            where = f"{prefix}.{where}" if where else prefix
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where or '(root)'}: {message}")
    return "; ".join(lines)


def parse_program(document: dict[str, Any]) -> Program:
    try:
        return Program.model_validate(document)
    except ValidationError as exc:
        raise ProgramError(describe_errors(exc)) from exc


def load_program(path: str | Path) -> Program:
    """Load the YAML a user would `kubectl apply`."""
    text = Path(path).read_text()
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProgramError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ProgramError(f"{path}: expected one GamificationProgram object")
    return parse_program(document)


def dump_program(program: Program) -> str:
    """The program as YAML with camelCase keys (what the operator puts in a ConfigMap)."""
    data = program.model_dump(mode="json", by_alias=True, exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)
