"""The benchmark report's words about the verdict follow the measured runs."""

from __future__ import annotations

import pytest
from bench.common import Spread
from bench.report import _standing


@pytest.mark.parametrize(
    ("runs", "words"),
    [
        ([0.56, 0.58, 0.60], "every run is above the 50% target"),
        ([0.48, 0.51, 0.55], "single runs fall below it"),
        ([0.44, 0.47, 0.52], "the median is below the 50% target"),
    ],
)
def test_standing_says_where_the_runs_sit_against_the_target(runs: list[float], words: str) -> None:
    assert words in _standing(Spread.of(runs), 0.5)
