"""The operator's pure parts: lifecycle by the clock, extensions, conditions, small helpers."""

from __future__ import annotations

import base64
import io
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gamify.program import ProgramError, ProgramSpec, parse_program
from gamify_operator import lifecycle, status
from gamify_operator.__main__ import OperatorJsonFormatter, QuietTimers
from gamify_operator.builders import api_keys_secret
from gamify_operator.config import OperatorConfig
from gamify_operator.lifecycle import Phase
from gamify_operator.reconcile import ingest_url, plain, program_of, stored_api_keys
from gamify_operator.status import Condition

START = datetime(2027, 1, 1, 3, 0, tzinfo=UTC)  # 2027-01-01T00:00:00-03:00
END = datetime(2027, 3, 1, 3, 0, tzinfo=UTC)
GRACE = timedelta(hours=72)
SECOND = timedelta(seconds=1)


def spec(**changes: Any) -> ProgramSpec:
    document: dict[str, Any] = {
        "apiVersion": "gamification.io/v1alpha1",
        "kind": "GamificationProgram",
        "metadata": {"name": "acme-2027"},
        "spec": {
            "tenant": "acme",
            "schedule": {
                "start": "2027-01-01T00:00:00-03:00",
                "end": "2027-03-01T00:00:00-03:00",
                "timezone": "America/Sao_Paulo",
            },
            "rules": [{"id": "steps", "event": "activity.steps", "points": 10}],
            **changes,
        },
    }
    return parse_program(document).spec


# --- phases by the clock -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "phase", "closed", "accepting", "next_transition"),
    [
        (START - SECOND, Phase.scheduled, False, True, START),
        (START, Phase.active, False, True, END),  # the instants belong to the program
        (END, Phase.active, False, True, END),
        (END + SECOND, Phase.ended, False, True, END + GRACE),  # late events still arrive
        (END + GRACE, Phase.ended, False, True, END + GRACE),
        (END + GRACE + SECOND, Phase.ended, True, False, None),
    ],
)
def test_phase_follows_the_dates(
    now: datetime, phase: Phase, closed: bool, accepting: bool, next_transition: datetime | None
) -> None:
    state = lifecycle.lifecycle(spec(), now)
    assert (state.phase, state.closed, state.accepting, state.next_transition) == (
        phase,
        closed,
        accepting,
        next_transition,
    )


def test_suspend_wins_over_the_dates_and_stops_ingest() -> None:
    for now in (START - SECOND, START + SECOND, END + SECOND):
        state = lifecycle.lifecycle(spec(suspend=True), now)
        assert state.phase is Phase.suspended
        assert not state.accepting
        assert lifecycle.scaling(state, final_snapshot_taken=False) == lifecycle.Scaling(
            ingest_to_zero=True, scoring_to_zero=False, snapshots_suspended=False
        )


def test_grace_period_comes_from_the_spec() -> None:
    short = spec(
        schedule={"start": "2027-01-01T00:00:00Z", "end": "2027-01-02T00:00:00Z", "gracePeriod": "1h"}
    )
    end = datetime(2027, 1, 2, tzinfo=UTC)
    assert not lifecycle.lifecycle(short, end + timedelta(minutes=59)).closed
    assert lifecycle.lifecycle(short, end + timedelta(minutes=61)).closed


def test_scaling_stops_scoring_and_snapshots_only_after_the_final_snapshot() -> None:
    closed = lifecycle.lifecycle(spec(), END + GRACE + SECOND)
    assert lifecycle.scaling(closed, final_snapshot_taken=False) == lifecycle.Scaling(
        ingest_to_zero=True, scoring_to_zero=False, snapshots_suspended=False
    )
    assert lifecycle.scaling(closed, final_snapshot_taken=True) == lifecycle.Scaling(
        ingest_to_zero=True, scoring_to_zero=True, snapshots_suspended=True
    )
    running = lifecycle.lifecycle(spec(), START + SECOND)
    assert lifecycle.scaling(running, final_snapshot_taken=True) == lifecycle.Scaling(False, False, False)


# --- final snapshot record ---------------------------------------------------------------------


def test_final_snapshot_is_per_end() -> None:
    program = spec()
    record = lifecycle.final_snapshot_record(
        program, at=END + GRACE, version=7, snapshot_url="gs://b/acme-2027/", last_scored_position=42
    )
    assert record == {
        "end": "2027-03-01T03:00:00Z",
        "at": "2027-03-04T03:00:00Z",
        "version": 7,
        "url": "gs://b/acme-2027/",
        "lastScoredPosition": 42,
    }
    assert lifecycle.final_snapshot_done(program, record)
    # The same instant written with another offset is the same end.
    assert lifecycle.final_snapshot_done(program, {**record, "end": "2027-03-01T00:00:00-03:00"})
    # Extended after closing: the old record does not count for the new end.
    extended = spec(schedule={"start": "2027-01-01T00:00:00-03:00", "end": "2027-04-01T00:00:00-03:00"})
    assert not lifecycle.final_snapshot_done(extended, record)
    assert not lifecycle.final_snapshot_done(program, None)
    assert not lifecycle.final_snapshot_done(program, {"end": "not a time"})


# --- extensions ----------------------------------------------------------------------------------


def test_end_change_records_previous_and_new_end() -> None:
    at = datetime(2027, 2, 10, 12, 0, 0, 500_000, tzinfo=UTC)
    entry = lifecycle.end_change("2027-03-01T00:00:00-03:00", "2027-04-01T00:00:00-03:00", at)
    assert entry == {
        "previousEnd": "2027-03-01T03:00:00Z",
        "newEnd": "2027-04-01T03:00:00Z",
        "at": "2027-02-10T12:00:00Z",
    }
    assert lifecycle.end_change("2027-03-01T03:00:00Z", "2027-03-01T00:00:00-03:00", at) is None
    assert lifecycle.end_change(None, "2027-04-01T00:00:00Z", at) is None
    assert lifecycle.end_change("garbage", "2027-04-01T00:00:00Z", at) is None


def test_history_appends_once_per_change_and_keeps_the_input() -> None:
    first = {
        "previousEnd": "2027-03-01T03:00:00Z",
        "newEnd": "2027-04-01T03:00:00Z",
        "at": "2027-02-10T12:00:00Z",
    }
    history = lifecycle.with_extension(None, first)
    assert history == [first]
    # A retried handler sees the same edit again (later): not a second extension.
    again = {**first, "at": "2027-02-10T12:05:00Z"}
    assert lifecycle.with_extension(history, again) == [first]
    second = {
        "previousEnd": "2027-04-01T03:00:00Z",
        "newEnd": "2027-05-01T03:00:00Z",
        "at": "2027-03-20T00:00:00Z",
    }
    grown = lifecycle.with_extension(history, second)
    assert grown == [first, second]
    assert history == [first]
    assert lifecycle.with_extension(grown, None) == grown


# --- conditions ----------------------------------------------------------------------------------

T0 = datetime(2027, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_condition_keeps_transition_time_while_status_holds() -> None:
    first = status.merge(None, [Condition.ok(status.STREAM, "Provisioned", "stream S")], 1, T0)
    assert first == [
        {
            "type": "Stream",
            "status": "True",
            "reason": "Provisioned",
            "message": "stream S",
            "lastTransitionTime": "2027-01-01T00:00:00Z",
            "observedGeneration": 1,
        }
    ]
    same = status.merge(first, [Condition.ok(status.STREAM, "Provisioned", "stream S, again")], 2, T1)
    assert same[0]["lastTransitionTime"] == "2027-01-01T00:00:00Z"
    assert same[0]["observedGeneration"] == 2
    assert same[0]["message"] == "stream S, again"
    flipped = status.merge(same, [Condition.failed(status.STREAM, "ProvisioningFailed", "down")], 2, T1)
    assert flipped[0]["status"] == "False"
    assert flipped[0]["lastTransitionTime"] == "2027-01-01T00:05:00Z"


def test_conditions_in_a_fixed_order_and_unknown_types_kept() -> None:
    existing = [{"type": "Custom", "status": "True"}, {"type": "Ready", "status": "False"}]
    updates = [Condition.ok(kind, "Ok") for kind in reversed(status.COMPONENTS)]
    merged = status.merge(existing, updates, 3, T0)
    assert [c["type"] for c in merged] == [*status.ORDER, "Custom"]


def test_ready_sums_up_the_components() -> None:
    every = status.merge(None, [Condition.ok(kind, "Ok") for kind in status.COMPONENTS], 1, T0)
    assert status.ready(every).status == "True"
    one_down = status.merge(every, [Condition.failed(status.DATABASE, "ProvisioningFailed", "x")], 1, T0)
    ready = status.ready(one_down)
    assert (ready.status, ready.reason) == ("False", "ComponentsNotReady")
    assert "Database" in ready.message
    waiting = status.merge(every, [Condition.unknown(status.SNAPSHOTS, "Draining")], 1, T0)
    assert status.ready(waiting).status == "Unknown"
    partial = status.merge(None, [Condition.ok(status.NAMESPACE, "Applied")], 1, T0)
    assert status.ready(partial).status == "Unknown"
    assert "not reconciled yet" in status.ready(partial).message


# --- reconcile helpers -----------------------------------------------------------------------------


def body(**spec_changes: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gamification.io/v1alpha1",
        "kind": "GamificationProgram",
        "metadata": {"name": "acme-2027", "uid": "u-1", "generation": 4, "labels": {"x": "y"}},
        "spec": {
            "tenant": "acme",
            "schedule": {"start": "2027-01-01T00:00:00Z", "end": "2027-02-01T00:00:00Z"},
            "rules": [{"id": "steps", "event": "activity.steps", "points": 10}],
            **spec_changes,
        },
    }


def test_program_of_validates_what_the_crd_cannot() -> None:
    assert program_of(body()).name == "acme-2027"
    bad_zone = body(
        schedule={"start": "2027-01-01T00:00:00Z", "end": "2027-02-01T00:00:00Z", "timezone": "Mars/Olympus"}
    )
    with pytest.raises(
        ProgramError, match=r"spec\.schedule\.timezone: unknown IANA time zone 'Mars/Olympus'"
    ):
        program_of(bad_zone)


def test_plain_turns_read_only_views_into_json_data() -> None:
    class View(dict[str, Any]):
        pass

    assert plain({"a": View(b=[1, {"c": 2}])}) == {"a": {"b": [1, {"c": 2}]}}


def test_stored_api_keys_keep_the_current_first_and_a_hand_added_key() -> None:
    program = parse_program(body())
    data = api_keys_secret(program, ["gk_current", "gk_old"])["data"]
    assert stored_api_keys(data) == ["gk_current", "gk_old"]
    # Rotation by hand: a new line in `api-keys` (the hashes are derived again by the operator).
    data = {**data, "api-keys": base64.b64encode(b"gk_current\ngk_old\ngk_new\n").decode()}
    assert stored_api_keys(data) == ["gk_current", "gk_old", "gk_new"]
    assert stored_api_keys(None) == []
    assert stored_api_keys({}) == []


def test_ingest_url_is_the_service_in_the_program_namespace() -> None:
    assert ingest_url("acme-2027", OperatorConfig()) == "http://ingest.gamify-acme-2027.svc.cluster.local"


def test_operator_log_lines_drop_kopf_internals_and_name_the_program() -> None:
    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler succeeded.", None, None)
    record.settings = object()
    record.k8s_skip = False
    record.k8s_ref = {"name": "acme-2027", "kind": "GamificationProgram"}
    line = json.loads(OperatorJsonFormatter("operator").format(record))
    assert line["program"] == "acme-2027"
    assert not {"settings", "k8s_skip", "k8s_ref"} & set(line)
    # The original record is untouched: Kopf's event poster reads it after us.
    assert hasattr(record, "settings") and hasattr(record, "k8s_ref")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OperatorJsonFormatter("operator"))
    handler.emit(record)
    assert "acme-2027" in stream.getvalue()


def test_successful_timer_runs_are_not_logged_but_failures_are() -> None:
    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    quiet = QuietTimers()
    assert not quiet.filter(record(logging.INFO, "Timer 'lifecycle_timer' succeeded."))
    assert quiet.filter(
        record(logging.ERROR, "Timer 'lifecycle_timer' failed with an exception. Will retry.")
    )
    assert quiet.filter(record(logging.INFO, "Handler 'reconcile_program' succeeded."))
