"""The membership-inference audit: correct statistics, chance on independent data, and able to fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY, small_store
from scipy.stats import mannwhitneyu

from fedgan.config import TrainConfig
from fedgan.data.sources.synth_sets import write_fundus_set
from fedgan.data.store import Store
from fedgan.evaluation.privacy import audit, roc_auc, tpr_at_fpr
from fedgan.reporting.report import build_report
from fedgan.training.recipes import apply_recipe
from fedgan.training.run import train_centralised


def test_auc_matches_the_mann_whitney_statistic_and_tpr_is_read_at_the_threshold() -> None:
    rng = np.random.default_rng(0)
    members, others = rng.normal(0.5, 1, 300), rng.normal(0, 1, 200)
    u = mannwhitneyu(members, others).statistic
    assert roc_auc(members, others) == pytest.approx(u / (300 * 200))
    assert roc_auc(np.arange(10.0) + 100, np.arange(10.0)) == 1.0 and roc_auc(np.ones(5), np.ones(5)) == 0.5
    assert tpr_at_fpr(np.arange(10.0) + 100, np.arange(100.0)) == 1.0
    assert tpr_at_fpr(np.arange(100.0), np.arange(100.0)) == 0.0  # no member above the highest non-member at 1 % of 100


@pytest.fixture(scope="module")
def overfitted(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A GAN trained for many epochs on the 7 training images of a 16 px store (the rest held out),
    with the paper's recipe: the small-data recipe exists to keep D from memorising its images."""
    root = tmp_path_factory.mktemp("overfit")
    store = small_store(fundus_set, root / "store", size=16, heldout=0.8)
    model, train = apply_recipe("paper", TINY, TrainConfig(epochs=150, batch_size=4, sample_count=8))
    train_centralised(store, root / "run", model_config=model, train_config=train, progress=False)
    return store, root / "run"


@pytest.mark.slow
def test_the_audit_catches_a_deliberately_overfitted_gan(overfitted: tuple[Path, Path]) -> None:
    store, run = overfitted
    result = audit(run, store, Path(f"{store}:heldout"), samples=200)
    logan = result["logan"]
    assert logan["members"] == logan["non_members"] == len(Store(store).labels("train"))
    assert logan["auc"]["value"] >= 0.85 and logan["auc"]["low"] > 0.5, (
        logan
    )  # the shipped discriminator gives members away
    assert json.loads((run / "eval" / "privacy.json").read_text())["logan"]["auc"] == logan["auc"]
    page = build_report(run).read_text()
    assert "LOGAN, white-box" in page and f"{logan['auc']['value']:.4g}" in page and "Closest generated" in page


@pytest.mark.slow
def test_the_audit_is_at_chance_on_images_the_gan_never_saw(overfitted: tuple[Path, Path], tmp_path: Path) -> None:
    store, run = overfitted
    write_fundus_set(tmp_path / "other", count=32, size=192, seed=99, workers=1, progress=False)
    other = small_store(tmp_path / "other", tmp_path / "other-store", size=16, heldout=0)
    result = audit(run, Path(f"{store}:heldout"), other, samples=200)  # neither set was trained on
    for attack in ("gan_leaks", "logan"):
        auc = result[attack]["auc"]
        assert auc["low"] < 0.5 < auc["high"] or abs(auc["value"] - 0.5) < 0.2, (attack, auc)
