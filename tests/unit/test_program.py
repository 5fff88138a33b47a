"""The GamificationProgram model: loading the YAML, defaults, and field-named validation errors."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from gamify.program import (
    Mode,
    OnDelete,
    Program,
    ProgramError,
    Window,
    dump_program,
    load_program,
    parse_duration,
    parse_program,
)

SAMPLE = """\
apiVersion: gamification.io/v1alpha1
kind: GamificationProgram
metadata: {name: acme-2027}
spec:
  tenant: acme
  schedule:
    start: "2027-01-01T00:00:00-03:00"
    end: "2027-03-01T00:00:00-03:00"
    timezone: America/Sao_Paulo
  mode: both
  rules:
    - {id: steps, event: activity.steps, points: 10, unit: {property: steps, size: 1000}, dailyCap: 100}
    - {id: checkin, event: app.checkin, points: 5, oncePerUser: true}
  boosts:
    - {name: launch, start: "2027-01-01T00:00:00-03:00", end: "2027-01-08T00:00:00-03:00", multiplier: 1.5}
    - {name: new-year, start: "2027-01-01T00:00:00-03:00", end: "2027-01-02T00:00:00-03:00", multiplier: 2}
  badges:
    - {id: first-100, name: First 100, minPoints: 100}
    - {id: walker, name: Walker, rule: steps, minCount: 2}
  rewards:
    - {id: mug, name: Mug, cost: 50, stock: 1, perUserLimit: 1}
  leaderboards:
    - {id: global, window: all-time}
    - {id: week, window: weekly, size: 10}
"""

MINIMAL: dict[str, Any] = {
    "apiVersion": "gamification.io/v1alpha1",
    "kind": "GamificationProgram",
    "metadata": {"name": "tiny"},
    "spec": {
        "tenant": "acme",
        "schedule": {"start": "2027-01-01T00:00:00Z", "end": "2027-02-01T00:00:00Z"},
        "rules": [{"id": "r", "event": "app.checkin", "points": 1}],
    },
}


@pytest.fixture
def sample_path(tmp_path: Path) -> Path:
    path = tmp_path / "program.yaml"
    path.write_text(SAMPLE)
    return path


def sample_document() -> dict[str, Any]:
    document = yaml.safe_load(SAMPLE)
    assert isinstance(document, dict)
    return document


def test_sample_loads_with_camel_case_fields(sample_path: Path) -> None:
    program = load_program(sample_path)
    spec = program.spec
    assert program.name == "acme-2027"
    assert spec.tenant == "acme"
    assert spec.mode == Mode.both
    assert spec.schedule.start == datetime(2027, 1, 1, 3, tzinfo=UTC)
    assert spec.schedule.end == datetime(2027, 3, 1, 3, tzinfo=UTC)
    steps, checkin = spec.rules
    assert steps.unit is not None and steps.unit.property == "steps" and steps.unit.size == 1000
    assert steps.daily_cap == 100 and not steps.once_per_user
    assert checkin.once_per_user and checkin.daily_cap is None
    assert [b.multiplier for b in spec.boosts] == [Decimal("1.5"), Decimal("2")]
    assert spec.badges[0].min_points == 100
    assert (spec.badges[1].rule, spec.badges[1].min_count) == ("steps", 2)
    mug = spec.reward("mug")
    assert mug is not None and (mug.cost, mug.stock, mug.per_user_limit) == (50, 1, 1)
    assert spec.reward("nope") is None
    assert [(b.id, b.window, b.size) for b in spec.leaderboards] == [
        ("global", Window.all_time, 100),
        ("week", Window.weekly, 10),
    ]
    assert spec.rules_for("activity.steps") == [steps]
    assert spec.rules_for("unknown.type") == []


def test_defaults() -> None:
    spec = parse_program(copy.deepcopy(MINIMAL)).spec
    assert spec.schedule.grace_period == "72h"
    assert spec.schedule.grace == timedelta(hours=72)
    assert spec.schedule.timezone == "UTC"
    assert spec.mode == Mode.both
    assert spec.retention.on_delete == OnDelete.retain
    assert spec.suspend is False
    assert spec.boosts == [] and spec.badges == [] and spec.rewards == [] and spec.leaderboards == []
    rule = spec.rules[0]
    assert rule.unit is None and rule.daily_cap is None and not rule.once_per_user and rule.conditions == []


def test_leaderboard_size_defaults_to_100(sample_path: Path) -> None:
    assert load_program(sample_path).spec.leaderboards[0].size == 100


def test_snake_case_names_are_accepted_too() -> None:
    document = copy.deepcopy(MINIMAL)
    document["spec"]["rules"][0]["once_per_user"] = True
    assert parse_program(document).spec.rules[0].once_per_user


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72h", timedelta(hours=72)),
        ("90d", timedelta(days=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "3 days", "72", "1.5h", "-1h", "1h1d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_dump_round_trips(sample_path: Path) -> None:
    program = load_program(sample_path)
    text = dump_program(program)
    assert "dailyCap: 100" in text and "oncePerUser: true" in text  # camelCase on the wire
    again = parse_program(yaml.safe_load(text))
    assert again == program
    assert dump_program(again) == text


def test_dump_round_trips_minimal_and_conditions(tmp_path: Path) -> None:
    document = copy.deepcopy(MINIMAL)
    document["spec"]["rules"][0]["conditions"] = [
        {"property": "kind", "op": "in", "value": ["a", "b"]},
        {"property": "level", "op": "gte", "value": 2.5},
    ]
    document["spec"]["boosts"] = [
        {"name": "b", "start": "2027-01-01T00:00:00Z", "end": "2027-01-02T00:00:00Z", "multiplier": 1.1}
    ]
    program = parse_program(document)
    path = tmp_path / "p.yaml"
    path.write_text(dump_program(program))
    again = load_program(path)
    assert again == program
    assert again.spec.boosts[0].multiplier == Decimal("1.1")


def test_not_yaml_and_not_an_object(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    with pytest.raises(ProgramError, match="not valid YAML"):
        load_program(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ProgramError, match="expected one GamificationProgram object"):
        load_program(listing)


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """A mutation that sets a dotted path (list indices as numbers) in the document."""

    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return mutate


def _append(path: str, item: Callable[[dict[str, Any]], Any]) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        node: Any = document
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        node.append(item(document))

    return mutate


def _copy_of(path: str) -> Callable[[dict[str, Any]], Any]:
    def get(document: dict[str, Any]) -> Any:
        node: Any = document
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        return copy.deepcopy(node)

    return get


INVALID: list[tuple[str, Mutation, str, str]] = [
    # (case, mutation, field path named, words in the message)
    ("end equals start", _set("spec.schedule.end", "2027-01-01T00:00:00-03:00"), "spec.schedule", "after"),
    ("end before start", _set("spec.schedule.end", "2026-12-01T00:00:00-03:00"), "spec.schedule", "after"),
    ("unknown timezone", _set("spec.schedule.timezone", "Mars/Olympus"), "spec.schedule.timezone", "zone"),
    (
        "path as timezone",
        _set("spec.schedule.timezone", "../../etc/passwd"),
        "spec.schedule.timezone",
        "zone",
    ),
    ("bad duration", _set("spec.schedule.gracePeriod", "3 days"), "spec.schedule.gracePeriod", "duration"),
    (
        "bad retention duration",
        _set("spec.retention", {"eventsMaxAge": "forever"}),
        "spec.retention.eventsMaxAge",
        "duration",
    ),
    ("duplicate rule", _append("spec.rules", _copy_of("spec.rules.0")), "spec.rules[2].id", "duplicate rule"),
    (
        "duplicate badge",
        _append("spec.badges", _copy_of("spec.badges.1")),
        "spec.badges[2].id",
        "duplicate badge",
    ),
    (
        "duplicate reward",
        _append("spec.rewards", _copy_of("spec.rewards.0")),
        "spec.rewards[1].id",
        "duplicate reward",
    ),
    (
        "duplicate board",
        _append("spec.leaderboards", _copy_of("spec.leaderboards.0")),
        "spec.leaderboards[2].id",
        "duplicate leaderboard",
    ),
    ("badge unknown rule", _set("spec.badges.1.rule", "swimming"), "spec.badges[1].rule", "unknown rule"),
    ("badge both thresholds", _set("spec.badges.1.minPoints", 10), "spec.badges[1]", "either"),
    ("badge no threshold", _delete("spec.badges.0.minPoints"), "spec.badges[0]", "either"),
    ("badge rule without count", _delete("spec.badges.1.minCount"), "spec.badges[1]", "minCount"),
    ("multiplier zero", _set("spec.boosts.0.multiplier", 0), "spec.boosts[0].multiplier", "greater than 0"),
    (
        "multiplier negative",
        _set("spec.boosts.1.multiplier", -2),
        "spec.boosts[1].multiplier",
        "greater than 0",
    ),
    (
        "boost end before start",
        _set("spec.boosts.0.end", "2026-12-31T00:00:00-03:00"),
        "spec.boosts[0]",
        "after its start",
    ),
    ("reserved event", _set("spec.rules.1.event", "reward.redeem"), "spec.rules[1].event", "reserved"),
    # JSON types, as the API server has them: pydantic alone would read these as 1, 100, 2.5, 1.5, True.
    ("points true", _set("spec.rules.1.points", True), "spec.rules[1].points", "must be a number"),
    ("daily cap as text", _set("spec.rules.0.dailyCap", "100"), "spec.rules[0].dailyCap", "must be a number"),
    (
        "unit size as text",
        _set("spec.rules.0.unit.size", "2.5"),
        "spec.rules[0].unit.size",
        "must be a number",
    ),
    (
        "multiplier as text",
        _set("spec.boosts.0.multiplier", "1.5"),
        "spec.boosts[0].multiplier",
        "must be a number",
    ),
    ("suspend as text", _set("spec.suspend", "yes"), "spec.suspend", "true or false"),
    ("once per user as 1", _set("spec.rules.1.oncePerUser", 1), "spec.rules[1].oncePerUser", "true or false"),
    ("negative points", _set("spec.rules.1.points", -1), "spec.rules[1].points", "greater than or equal"),
    ("unit size zero", _set("spec.rules.0.unit.size", 0), "spec.rules[0].unit.size", "greater than 0"),
    ("zero daily cap", _set("spec.rules.0.dailyCap", 0), "spec.rules[0].dailyCap", "greater than or equal"),
    ("event type with wildcard", _set("spec.rules.0.event", "activity.>"), "spec.rules[0].event", "pattern"),
    ("typo in a rule", _set("spec.rules.0.dailycap", 100), "spec.rules[0].dailycap", "Extra inputs"),
    ("typo in spec", _set("spec.leaderbord", []), "spec.leaderbord", "Extra inputs"),
    ("typo in schedule", _set("spec.schedule.timeZone", "UTC"), "spec.schedule.timeZone", "Extra inputs"),
    ("tenant not a DNS label", _set("spec.tenant", "Acme_Corp"), "spec.tenant", "pattern"),
    ("tenant too long", _set("spec.tenant", "a" * 64), "spec.tenant", "at most 63"),
    ("name too long", _set("metadata.name", "a" * 41), "metadata.name", "at most 40"),
    ("name not a DNS label", _set("metadata.name", "Acme.2027"), "metadata.name", "pattern"),
    ("naive start", _set("spec.schedule.start", "2027-01-01T00:00:00"), "spec.schedule.start", "offset"),
    ("naive boost end", _set("spec.boosts.0.end", "2027-01-08T00:00:00"), "spec.boosts[0].end", "offset"),
    ("ranking with rewards", _set("spec.mode", "ranking"), "spec.rewards", "mode `ranking`"),
    ("rewards with boards", _set("spec.mode", "rewards"), "spec.leaderboards", "mode `rewards`"),
    ("unknown mode", _set("spec.mode", "points"), "spec.mode", "ranking"),
    (
        "gt with a string",
        _set("spec.rules.0.conditions", [{"property": "steps", "op": "gt", "value": "5"}]),
        "spec.rules[0].conditions[0]",
        "`gt` needs a numeric value",
    ),
    (
        "lte with a boolean",
        _set("spec.rules.0.conditions", [{"property": "steps", "op": "lte", "value": True}]),
        "spec.rules[0].conditions[0]",
        "`lte` needs a numeric value",
    ),
    (
        "in without a list",
        _set("spec.rules.0.conditions", [{"property": "kind", "op": "in", "value": "walk"}]),
        "spec.rules[0].conditions[0]",
        "`in` needs a list",
    ),
    (
        "unknown condition op",
        _set("spec.rules.0.conditions", [{"property": "kind", "op": "like", "value": "w%"}]),
        "spec.rules[0].conditions[0].op",
        "eq",
    ),
    (
        "bucket s3 scheme",
        _set("spec.snapshots", {"bucket": "s3://b/prefix"}),
        "spec.snapshots.bucket",
        "pattern",
    ),
    ("bucket http", _set("spec.snapshots", {"bucket": "https://x/y"}), "spec.snapshots.bucket", "pattern"),
    (
        "bucket relative file",
        _set("spec.snapshots", {"bucket": "file://rel"}),
        "spec.snapshots.bucket",
        "pattern",
    ),
    ("no rules", _set("spec.rules", []), "spec.rules", "at least 1"),
    ("wrong kind", _set("kind", "Program"), "kind", "GamificationProgram"),
    ("wrong apiVersion", _set("apiVersion", "gamification.io/v1"), "apiVersion", "v1alpha1"),
    ("no spec", _delete("spec"), "spec", "required"),
    ("no tenant", _delete("spec.tenant"), "spec.tenant", "required"),
    ("size over limit", _set("spec.leaderboards.1.size", 10_001), "spec.leaderboards[1].size", "less than"),
]


@pytest.mark.parametrize(("mutate", "where", "words"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_program_names_the_field(mutate: Mutation, where: str, words: str) -> None:
    document = sample_document()
    mutate(document)
    with pytest.raises(ProgramError) as raised:
        parse_program(document)
    message = str(raised.value)
    # Each error is "<path>: <message>"; the path must be exactly the field's.
    paths = [part.split(": ", 1)[0] for part in message.split("; ")]
    assert where in paths, message
    assert words in message, message


def test_every_error_is_reported_at_once() -> None:
    document = sample_document()
    document["spec"]["rules"][1]["points"] = -5
    document["spec"]["schedule"]["timezone"] = "Nowhere/Land"
    with pytest.raises(ProgramError) as raised:
        parse_program(document)
    assert "spec.rules[1].points" in str(raised.value)
    assert "spec.schedule.timezone" in str(raised.value)


def test_metadata_may_carry_kubernetes_fields() -> None:
    document = sample_document()
    document["metadata"].update(labels={"team": "hr"}, resourceVersion="12", uid="x")
    assert parse_program(document).name == "acme-2027"


def test_forty_character_name_is_fine() -> None:
    document = sample_document()
    document["metadata"]["name"] = "a" * 40
    assert parse_program(document).name == "a" * 40


def test_models_are_frozen(sample_path: Path) -> None:
    program = load_program(sample_path)
    with pytest.raises(ValueError):
        program.spec.rules[0].points = 99  # type: ignore[misc]
    assert isinstance(program, Program)


def test_null_fields_are_absent_as_the_api_server_prunes_them(tmp_path: Path) -> None:
    """`rewards:` left empty in YAML is null: kubectl applies it (the API server prunes nulls),
    so the local loader must read it as absent too, not refuse it."""
    document = sample_document()
    document["spec"]["rewards"] = None
    document["spec"]["boosts"] = None
    document["spec"]["rules"][0]["dailyCap"] = None
    document["spec"]["rules"][0]["conditions"] = [{"property": "where", "op": "eq", "value": {"room": None}}]
    path = tmp_path / "nulls.yaml"
    path.write_text(yaml.safe_dump(document))
    program = load_program(path)
    assert program.spec.rewards == [] and program.spec.boosts == []
    assert program.spec.rules[0].daily_cap is None
    # Inside a condition's value (kept as it is by the CRD) a null is data.
    assert program.spec.rules[0].conditions[0].value == {"room": None}
    # A required field given as null is still missing, and named.
    document["spec"]["schedule"]["start"] = None
    with pytest.raises(ProgramError, match=r"spec\.schedule\.start"):
        parse_program(document)
