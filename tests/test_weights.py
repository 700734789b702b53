"""Weight policy: pure function, no setup."""

from __future__ import annotations

import math

import pytest

from validator.weights import WeightsNotReady, weights_from_scores


def test_proportional_and_normalised() -> None:
    weights = weights_from_scores({0: 30.0, 1: 10.0}, {0, 1})
    assert weights == pytest.approx({0: 0.75, 1: 0.25})
    assert math.isclose(sum(weights.values()), 1.0)


def test_unregistered_uids_and_bad_scores_are_dropped() -> None:
    weights = weights_from_scores({0: 10.0, 1: float("nan"), 2: -5.0, 9: 99.0}, {0, 1, 2})
    assert weights == {0: 1.0}


@pytest.mark.parametrize("scores", [{}, {0: 0.0}, {0: float("nan")}, {5: 50.0}])
def test_nothing_positive_leaves_chain_untouched(scores: dict[int, float]) -> None:
    with pytest.raises(WeightsNotReady):
        weights_from_scores(scores, {0, 1})
