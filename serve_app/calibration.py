"""Operating points of a verification threshold, from genuine and impostor trial scores.

A trial is one probe against one enrolled template, scored on the service's similarity
scale ((1 + cos) / 2); the service accepts when the score is at or above the threshold.
TAR is the fraction of genuine trials accepted, FAR the fraction of impostor trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve

# Thresholds are given with 4 decimals, as an operator writes them in the environment.
_STEPS = 10_000


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    tar: float
    far: float


@dataclass(frozen=True)
class Roc:
    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray


def _scores(values: np.ndarray | list[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("no trials")
    return array


def rates_at(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> OperatingPoint:
    genuine, impostor = _scores(genuine), _scores(impostor)
    return OperatingPoint(float(threshold), float(np.mean(genuine >= threshold)), float(np.mean(impostor >= threshold)))


def min_impostor_trials(far: float) -> int:
    """Fewer impostor trials than this cannot show a false-accept rate as low as `far`."""
    return math.ceil(1.0 / far - 1e-9)


def threshold_for_far(impostor: np.ndarray, far: float) -> float:
    """The lowest threshold (4 decimals) that accepts at most `far` of the impostor trials."""
    if not 0.0 < far < 1.0:
        raise ValueError("the false-accept rate must be between 0 and 1")
    ranked = np.sort(_scores(impostor))[::-1]
    allowed = math.floor(far * ranked.size + 1e-9)  # impostors that may pass
    if allowed >= ranked.size:
        return 0.0
    # The first 4-decimal value above the highest impostor that must be refused (the
    # tolerance keeps a score that sits on the grid, e.g. 0.842, from rounding onto it).
    return (math.floor(float(ranked[allowed]) * _STEPS + 1e-6) + 1) / _STEPS


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> OperatingPoint | None:
    """Best TAR with a measured FAR at most `far`; None when the impostor trials are too few."""
    impostor = _scores(impostor)
    if impostor.size < min_impostor_trials(far):
        return None
    return rates_at(genuine, impostor, threshold_for_far(impostor, far))


def roc(genuine: np.ndarray, impostor: np.ndarray) -> Roc:
    genuine, impostor = _scores(genuine), _scores(impostor)
    labels = np.concatenate([np.ones(genuine.size), np.zeros(impostor.size)])
    far, tar, thresholds = roc_curve(labels, np.concatenate([genuine, impostor]), drop_intermediate=False)
    return Roc(np.asarray(far), np.asarray(tar), np.asarray(thresholds))


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> OperatingPoint:
    """Where FAR meets FRR (1 - TAR), interpolated between the two ROC points around it.
    When the scores do not overlap it is 0, halfway between the highest impostor and the
    lowest genuine score."""
    genuine, impostor = _scores(genuine), _scores(impostor)
    if impostor.max() < genuine.min():
        return OperatingPoint(float(impostor.max() + genuine.min()) / 2, 1.0, 0.0)
    curve = roc(genuine, impostor)
    frr = 1.0 - curve.tar
    gap = frr - curve.far  # falls from 1 (nothing accepted) to -1 (everything accepted)
    after = int(np.argmax(gap <= 0))
    before = max(after - 1, 0)
    span = gap[before] - gap[after]
    weight = 0.0 if span == 0 else gap[before] / span
    rate = float(curve.far[before] + weight * (curve.far[after] - curve.far[before]))
    # The first ROC threshold is +inf (nothing accepted); interpolate from the next one.
    low, high = curve.thresholds[after], curve.thresholds[before] if before > 0 else curve.thresholds[after]
    threshold = float(high + weight * (low - high))
    return OperatingPoint(threshold, 1.0 - rate, rate)
