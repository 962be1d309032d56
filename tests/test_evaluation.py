"""Fidelity metrics against known values, the evaluator's sanity properties, and `evaluate` on a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import TINY, small_store

from fedgan.config import StoreConfig, TrainConfig
from fedgan.data.store import Store
from fedgan.errors import FedGANError
from fedgan.evaluation.evaluate import evaluate_run
from fedgan.evaluation.evaluator import heldout_halves, load_evaluator
from fedgan.evaluation.fidelity import fd, fidelity, frechet_distance, kid, over_draws, prdc, realism_scores
from fedgan.training.run import train_centralised


def test_frechet_distance_of_two_known_gaussians() -> None:
    """Diagonal covariances: FD = |mu1 - mu2|^2 + sum (s1 - s2)^2 with s the standard deviations."""
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([2.0, 2.0, 1.5])
    expected = 1 + 0 + 4 + (1 + 0 + 1)
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-9)
    rng = np.random.default_rng(0)
    a, b = rng.normal(mu1, s1, (40000, 3)), rng.normal(mu2, s2, (40000, 3))
    assert fd(a, b) == pytest.approx(expected, rel=0.03)  # from samples, up to sampling error


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same = kid(a, b)
    assert abs(same) < 0.01
    assert same < kid(a, b + 0.5) < kid(a, b + 1.0)


def test_precision_recall_density_coverage_extremes() -> None:
    rng = np.random.default_rng(2)
    real = rng.normal(size=(300, 4))
    same = prdc(real, rng.normal(size=(300, 4)))
    assert same["precision"] > 0.9 and same["recall"] > 0.9 and same["coverage"] > 0.9 and 0.7 < same["density"] < 1.3
    far = prdc(real, rng.normal(size=(300, 4)) + 50)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    collapsed = prdc(
        real, np.zeros((300, 4)) + rng.normal(scale=0.01, size=(300, 4))
    )  # mode collapse: precise, no recall
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.1 and collapsed["coverage"] < 0.2


def test_realism_score_is_high_inside_and_low_far_from_the_real_set() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(300, 4))
    scores = realism_scores(real, np.vstack([np.zeros((1, 4)), np.full((1, 4), 20.0)]))
    assert scores[0] > 1 > scores[1]


def test_intervals_over_redrawn_sets_bracket_the_mean_and_separate_a_shift() -> None:
    rng = np.random.default_rng(4)
    real = rng.normal(size=(150, 6))
    near = over_draws(fidelity, real, [rng.normal(size=(150, 6)) for _ in range(10)])
    far = over_draws(fidelity, real, [rng.normal(size=(150, 6)) + 1.0 for _ in range(10)])
    for name, interval in near.items():
        assert interval["low"] <= interval["value"] <= interval["high"], name
    assert near["fd"]["high"] < far["fd"]["low"] and near["precision"]["low"] > far["precision"]["high"]


@pytest.fixture(scope="module")
def eval_store(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_store(fundus_set, tmp_path_factory.mktemp("stores") / "eval32", size=32, heldout=0.5)


def degrade(images: np.ndarray, blur: float = 0.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    out = images.copy()
    if blur:
        out = np.stack([cv2.GaussianBlur(image[0], (0, 0), blur)[None] for image in out])
    return (
        np.clip(out + np.random.default_rng(seed).normal(scale=noise, size=out.shape).astype(np.float32), -1, 1)
        if noise
        else out
    )


def test_a_grader_that_always_answers_grade_0_is_marked_and_scores_chance_balanced_accuracy() -> None:
    from fedgan.evaluation.evaluator import grading_scores

    labels = np.array([0] * 72 + [1] * 10 + [2] * 10 + [3] * 4 + [4] * 4)  # screening data: mostly grade 0
    always_zero = grading_scores(np.zeros_like(labels), labels)
    assert always_zero["accuracy"] == 0.72 and always_zero["balanced_accuracy"] == pytest.approx(0.2)
    assert always_zero["kappa"] == 0 and always_zero["single_grade"]
    honest = grading_scores(labels, labels)
    assert honest["balanced_accuracy"] == 1 and not honest["single_grade"]


def test_evaluator_sanity_real_vs_real_small_and_monotone_in_blur_and_noise(eval_store: Path) -> None:
    evaluator = load_evaluator(eval_store)
    assert load_evaluator(eval_store).sha256 == evaluator.sha256  # trained once, then reused
    images, _ = Store(eval_store).load("train")
    real = evaluator.embed(images)
    blurred = [fd(real, evaluator.embed(degrade(images, blur=s))) for s in (1.0, 2.0, 3.0, 5.0)]
    noised = [fd(real, evaluator.embed(degrade(images, noise=s))) for s in (0.05, 0.2, 0.5, 1.0)]
    assert blurred == sorted(blurred) and noised == sorted(noised), (blurred, noised)
    assert fd(real, real) < 1e-6 < blurred[0]
    halves = fd(real[::2], real[1::2])  # two halves of one real set: small next to heavy degradation
    assert halves < blurred[-1] and halves < noised[-1]


def test_an_unreadable_evaluator_cache_is_made_again(eval_store: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = load_evaluator(eval_store)
    first.path.write_text("half a copy")  # what a crash mid-copy or a disk error leaves
    again = load_evaluator(eval_store)
    assert f"{first.path}: not a readable evaluator, truncated or corrupt (not a torch file); making it again" in (
        caplog.text
    )
    assert again.path == first.path and again.sha256 == first.sha256  # the same evaluator, from the same images


def test_features_do_not_depend_on_batch_size(eval_store: Path) -> None:
    evaluator = load_evaluator(eval_store)
    images, _ = Store(eval_store).load("train")
    assert np.allclose(
        evaluator.grader_features(images, batch_size=3), evaluator.grader_features(images, batch_size=256), atol=1e-5
    )
    assert np.allclose(
        np.concatenate([evaluator.embed(images[:3]), evaluator.embed(images[3:])]), evaluator.embed(images), atol=1e-5
    )


@pytest.mark.slow
def test_evaluate_a_tiny_conditional_run(eval_store: Path, tmp_path: Path) -> None:
    train_centralised(
        eval_store,
        tmp_path / "run",
        model_config=TINY,
        train_config=TrainConfig(epochs=1, batch_size=4),
        conditional=True,
        progress=False,
    )
    store_files = sorted(p.name for p in eval_store.iterdir())
    result = evaluate_run(tmp_path / "run", eval_store, count=40, reference=tmp_path / "run")
    assert sorted(p.name for p in eval_store.iterdir()) == store_files  # the evaluator is cached outside the store
    assert not any(name.startswith("evaluator") for name in store_files)
    saved = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["counts"] == {
        "real": len(Store(eval_store).labels("train")),
        "generated": 40,
        "evaluator": len(heldout_halves(Store(eval_store))[0]),
    }
    assert saved["evaluator_sha256"] == load_evaluator(eval_store).sha256
    for name in ("fd", "kid", "precision", "recall", "density", "coverage", "realism_score"):
        assert np.isfinite(saved["fidelity"][name]["value"]), name
    assert (
        0 <= saved["utility"]["synthetic_trained"]["accuracy"] <= 1
        and -1 <= saved["utility"]["real_trained"]["kappa"] <= 1
    )
    assert 0 < saved["paper_realism"]["value"] < 1


class PoolStandIn(torch.nn.Module):
    """Same calling convention as the TorchScript Inception file (RGB 0-255 in, pool features out)."""

    def __init__(self) -> None:
        super().__init__()
        self.project = torch.nn.Linear(3, 6)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.project(x.mean(dim=(2, 3)) / 255.0)


@pytest.mark.slow
def test_standard_fid_with_user_supplied_weights_and_a_clear_error_without(eval_store: Path, tmp_path: Path) -> None:
    train_centralised(
        eval_store,
        tmp_path / "run",
        model_config=TINY,
        train_config=TrainConfig(epochs=1, batch_size=4),
        progress=False,
    )
    with pytest.raises(FedGANError, match="Inception weights file not found"):
        evaluate_run(tmp_path / "run", eval_store, count=20, inception_weights=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(FedGANError, match="not a TorchScript Inception file"):
        evaluate_run(tmp_path / "run", eval_store, count=20, inception_weights=tmp_path / "junk.pt")
    torch.jit.save(torch.jit.script(PoolStandIn()), tmp_path / "inception.pt")
    result = evaluate_run(tmp_path / "run", eval_store, count=20, inception_weights=tmp_path / "inception.pt")
    assert result["fid"]["value"] > 0 and len(result["fid"]["weights_sha256"]) == 64


@pytest.mark.slow
def test_sampled_synthetic_set_reads_back_as_eyepacs_with_its_grades(eval_store: Path, tmp_path: Path) -> None:
    from fedgan.data.prepare import prepare_store
    from fedgan.synthetic import write_synthetic_set

    train_centralised(
        eval_store,
        tmp_path / "run",
        model_config=TINY,
        train_config=TrainConfig(epochs=1, batch_size=4),
        conditional=True,
        progress=False,
    )
    summary = write_synthetic_set(
        tmp_path / "run", tmp_path / "synthetic", count=25, grade_mix=(1, 0, 0, 0, 1), batch=10, progress=False
    )
    assert sum(summary.per_grade.values()) == 25 and set(summary.per_grade) <= {0, 4}
    assert (tmp_path / "synthetic" / "provenance.toml").is_file()
    prepared = prepare_store(
        tmp_path / "synthetic",
        tmp_path / "store",
        store_config=StoreConfig(heldout_fraction=0),
        workers=1,
        progress=False,
    )
    assert prepared.layout == "eyepacs" and prepared.written["train"] == 25 and not prepared.skipped
    labels = Store(tmp_path / "store").labels("train")
    assert {int(g): int((labels == g).sum()) for g in np.unique(labels)} == summary.per_grade
    with pytest.raises(FedGANError, match="is a folder holding the input"):  # --overwrite would have deleted the run
        write_synthetic_set(tmp_path / "run", tmp_path, count=5, overwrite=True, progress=False)
    assert (
        write_synthetic_set(tmp_path / "run", tmp_path / "synthetic", count=5, overwrite=True, progress=False).images
        == 5
    )
