"""Quadratic weighted kappa, the standard agreement measure for ordinal DR grades."""

from __future__ import annotations

import numpy as np


def quadratic_weighted_kappa(truth: np.ndarray, predicted: np.ndarray, num_classes: int = 5) -> float:
    """Cohen's kappa with quadratic weights: 1 is perfect agreement, 0 is chance level.

    Disagreements cost (i - j)^2, so calling grade 4 a grade 0 costs 16 times a one-step miss.
    Returns 0.0 when there is no variation to agree on (all truth and predictions one class).
    """
    truth, predicted = np.asarray(truth, int), np.asarray(predicted, int)
    if truth.shape != predicted.shape or truth.size == 0:
        raise ValueError("truth and predicted must be non-empty and of equal length")
    observed = np.zeros((num_classes, num_classes))
    np.add.at(observed, (truth, predicted), 1)
    grades = np.arange(num_classes)
    weights = (grades[:, None] - grades[None, :]) ** 2 / (num_classes - 1) ** 2
    expected = np.outer(observed.sum(1), observed.sum(0)) / truth.size
    denominator = (weights * expected).sum()
    return 0.0 if denominator == 0 else float(1 - (weights * observed).sum() / denominator)
