"""Threshold calibration: the operating-point math on score sets with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.calibration import OperatingPoint, equal_error_rate, rates_at, roc, tar_at_far, threshold_for_far

# Impostors evenly spread over [0.2, 0.7), genuine trials over [0.6, 1.0), 1000 of each:
# between 0.6 and 0.7, FAR(t) = (0.7 - t) / 0.5 and FRR(t) = (t - 0.6) / 0.4.
IMPOSTOR = 0.2 + 0.0005 * np.arange(1000)
GENUINE = 0.6 + 0.0004 * np.arange(1000)


def test_tar_at_far_on_evenly_spread_scores() -> None:
    point = tar_at_far(GENUINE, IMPOSTOR, 0.1)
    assert point is not None
    # 100 impostors at or above 0.65 may pass: the threshold sits just above the 101st (0.6495).
    assert point.threshold == 0.6496 and point.far == 0.1
    assert point.tar == pytest.approx(1 - (0.6496 - 0.6) / 0.4, abs=1e-3)
    point = tar_at_far(GENUINE, IMPOSTOR, 0.01)
    assert point is not None and point.far == 0.01 and point.tar == pytest.approx(0.7625, abs=2e-3)
    point = tar_at_far(GENUINE, IMPOSTOR, 0.001)
    # One impostor (0.6995) may pass; the next (0.6990) must not: genuine from 0.6992 on pass.
    assert point is not None and point.far == 0.001 and point.tar == 0.752


def test_far_below_one_over_the_impostor_count_is_not_claimed() -> None:
    assert tar_at_far(GENUINE, IMPOSTOR[::10], 0.001) is None  # 100 impostor trials
    assert tar_at_far(GENUINE, IMPOSTOR[::10], 0.01) is not None


def test_threshold_for_far_never_accepts_more_impostors_than_allowed() -> None:
    rng = np.random.default_rng(7)
    impostor = np.round(rng.beta(4, 6, 5000), 3)  # many ties
    for far in (0.2, 0.05, 0.01, 0.001, 0.0002):
        threshold = threshold_for_far(impostor, far)
        assert np.mean(impostor >= threshold) <= far
        # ...and one step (of the 4 decimals) lower would accept too many.
        assert np.mean(impostor >= threshold - 1e-4) > far or threshold == 0.0
    assert threshold_for_far(np.array([0.3, 0.4]), 0.4) == 0.4001  # neither may pass
    assert threshold_for_far(np.array([0.3, 0.4]), 0.5) == 0.3001  # one of the two may


def test_equal_error_rate_on_evenly_spread_scores() -> None:
    point = equal_error_rate(GENUINE, IMPOSTOR)
    # 0.4 (0.7 - t) = 0.5 (t - 0.6)  ->  t = 0.6444..., EER = 0.1111...
    assert point.threshold == pytest.approx(0.58 / 0.9, abs=1e-3)
    assert point.far == pytest.approx(1 / 9, abs=1e-3) and point.tar == pytest.approx(8 / 9, abs=1e-3)


def test_perfectly_separated_scores() -> None:
    genuine, impostor = np.array([0.8, 0.9, 0.95]), np.array([0.3, 0.4, 0.5, 0.6])
    assert equal_error_rate(genuine, impostor) == OperatingPoint(0.7, 1.0, 0.0)  # halfway 0.6 .. 0.8
    current = rates_at(genuine, impostor, 0.78)
    assert (current.tar, current.far) == (1.0, 0.0)
    curve = roc(genuine, impostor)
    assert curve.far[0] == 0.0 and curve.tar[-1] == 1.0 and np.all(np.diff(curve.far) >= 0)


def test_no_trials_is_an_error() -> None:
    with pytest.raises(ValueError):
        rates_at(np.array([]), IMPOSTOR, 0.5)
    with pytest.raises(ValueError):
        threshold_for_far(IMPOSTOR, 0.0)
