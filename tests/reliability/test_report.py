"""The reliability page: tables per scenario, a failing run says so, results survive a JSON
round trip, and the places kept for the soak and bad-input sections survive re-rendering."""

from __future__ import annotations

from typing import Any

from reliability.report import RunResults, foreign_sections, render, with_section


def scenario(name: str, lost: int = 0, double: int = 0, passed: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "title": f"Scenario {name}",
        "done": f"did {name} twice",
        "seconds": 12.0,
        "counts": {"sent": 1200, "accepted": 1190, "rejected": 10, "unresolved": 0, "scored": 1190 - lost,
                   "lost": lost, "double": double, "phantom": 0},
        "dead_letters": 0,
        "faults": [
            {"index": 0, "started": 100.0, "ended": 102.0, "detail": {"in_hand": 20}, "first_accepted": 0.2,
             "first_scored": 1.5, "all_scored": 5.0},
            {"index": 1, "started": 110.0, "ended": 111.0, "detail": {"in_hand": 7}, "first_accepted": 0.4,
             "first_scored": None, "all_scored": 4.0},
        ],
        "checks": [{"name": "a check", "passed": passed, "detail": "x | y"}],
        "client": {"requests": 70, "retries": 10, "statuses": {"0": 4, "202": 60, "503": 6}, "late_sends": 0},
        "lost_ids": ["e-1"] if lost else [],
        "error": None,
        "ok": passed and not lost and not double,
    }  # fmt: skip


def results(*scenarios: dict[str, Any]) -> RunResults:
    return RunResults(
        date="2027-01-01 00:00 UTC",
        command="make reliability",
        quick=False,
        machine={"CPUs (nproc)": "2"},
        config={"ack_wait": 5.0},
        scenarios=list(scenarios),
        seconds=300,
        load_before="1.00 / 1.00 / 1.00",
        load_after="2.00 / 2.00 / 2.00",
    )


def test_every_scenario_gets_its_counts_checks_and_recovery_times() -> None:
    page = render(results(scenario("one"), scenario("two")))
    assert "every scenario passed" in page
    assert "| Scenario one | 2 | 1,200 | 1,190 | 1,190 | **0** | **0** | 4.5 s (max 5.0 s) |" in page
    assert "### Scenario two — passed" in page and "**What was done:** did two twice" in page
    assert "first event scored again never (1 of 2)" in page  # a fault that never saw scoring resume
    assert "Each fault lasted 1.5 s (max 2.0 s)" in page
    assert "connection error: 4, 202: 60, 503: 6" in page
    assert "| a check | pass | x \\| y |" in page  # cell text cannot break the table
    assert "| CPUs (nproc) | 2 |" in page


def test_a_lost_or_double_counted_event_fails_the_run_and_names_the_ids() -> None:
    run = results(scenario("one"), scenario("two", lost=1, passed=False))
    assert not run.ok
    page = render(run)
    assert "**some scenarios FAILED**" in page and "### Scenario two — **FAILED**" in page
    assert "| **FAIL** |" in page and "`e-1`" in page
    assert not results().ok  # nothing ran: not a pass


def test_results_round_trip_through_json() -> None:
    run = results(scenario("one"))
    assert RunResults.from_json(run.to_json()) == run


def test_soak_and_bad_input_places_are_marked_and_kept_when_rendering_again() -> None:
    first = render(results(scenario("one")))
    assert set(foreign_sections(first)) == {"soak", "bad-input"}
    assert "soak.py" in foreign_sections(first)["soak"]
    filled = first.replace(foreign_sections(first)["soak"], "## Soak\n\nmemory flat over 10 minutes\n")
    again = render(results(scenario("one"), scenario("two")), existing=filled)
    assert foreign_sections(again)["soak"].strip() == "## Soak\n\nmemory flat over 10 minutes"
    assert "### Scenario two" in again
    assert render(results(scenario("one")), existing=first) == first  # stable


def test_with_section_fills_one_place_and_leaves_the_rest() -> None:
    page = render(results(scenario("one")))
    filled = with_section(page, "bad-input", "## Bad input\n\n5,000 cases, 0 server errors")
    assert foreign_sections(filled)["bad-input"].strip() == "## Bad input\n\n5,000 cases, 0 server errors"
    assert foreign_sections(filled)["soak"] == foreign_sections(page)["soak"]
    assert filled.replace(foreign_sections(filled)["bad-input"], "") == page.replace(
        foreign_sections(page)["bad-input"], ""
    )
    # Filling it again replaces, never appends; a page without the place gets it at the end.
    again = with_section(filled, "bad-input", "## Bad input\n\nsecond run")
    assert again.count("<!-- section:bad-input -->") == 1 and "second run" in again
    assert foreign_sections(with_section("# Other page\n", "soak", "## Soak"))["soak"].strip() == "## Soak"
