"""The DR grade survives the default preprocessing: a small CNN learns it from procedural images.

The full-size check (2,000 training and 500 test images, kappa >= 0.7) is
`benchmarks/grade_signal.py`; this is the same path at a third of the size, with balanced
grades, for CI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgan.config import PreprocessConfig, StoreConfig
from fedgan.data.prepare import prepare_store
from fedgan.data.sources.synth_sets import write_fundus_set
from fedgan.data.store import Store
from fedgan.evaluation.grader import GraderTraining, predict_grades, train_grader
from fedgan.evaluation.kappa import quadratic_weighted_kappa


def test_kappa_reference_values() -> None:
    truth = np.array([0, 1, 2, 3, 4])
    assert quadratic_weighted_kappa(truth, truth) == pytest.approx(1.0)
    assert quadratic_weighted_kappa(truth, truth[::-1]) == pytest.approx(-1.0)
    # Worked by hand: 1 - sum (t_i - p_i)^2 / (1/n sum_ij (t_i - p_j)^2) = 1 - 2 / (166 / 6)
    assert quadratic_weighted_kappa(np.array([0, 0, 1, 2, 4, 4]), np.array([0, 1, 1, 2, 3, 4])) == pytest.approx(
        1 - 12 / 166
    )


@pytest.mark.slow
def test_grade_is_learnable_after_preprocessing(tmp_path: Path) -> None:
    # Balanced grades: with the screening mix a set this small has too few grade 3-4 eyes to learn from.
    write_fundus_set(
        tmp_path / "raw", count=800, size=256, seed=11, grade_mix=(1, 1, 1, 1, 1), workers=2, progress=False
    )
    prepare_store(
        tmp_path / "raw",
        tmp_path / "store",
        preprocess_config=PreprocessConfig(),
        store_config=StoreConfig(heldout_fraction=0.25, seed=11),
        workers=2,
        progress=False,
    )
    store = Store(tmp_path / "store")
    x_train, y_train = store.load("train")
    x_test, y_test = store.load("heldout")
    model = train_grader(x_train, y_train, GraderTraining(epochs=10, seed=11))
    kappa = quadratic_weighted_kappa(y_test, predict_grades(model, x_test))
    assert kappa >= 0.6, f"quadratic weighted kappa {kappa:.3f}"
