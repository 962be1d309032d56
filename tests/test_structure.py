"""The evaluator's structure space sees what a person sees: FD worsens step by step under blur,
a checkerboard overlay, fading the vessels out, and shrinking diversity; and the in-training probe
measures a real generator in both spaces."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from helpers import CONDITIONAL, TINY, small_store

from fedgan.config import PreprocessConfig, StoreConfig, TrainConfig
from fedgan.data.prepare import prepare_store
from fedgan.data.sources.synth_sets import write_fundus_set
from fedgan.data.store import Store
from fedgan.evaluation.evaluator import (
    HEADLINE,
    REAL_GRADER_FILE,
    SPACES,
    evaluator_folder,
    heldout_halves,
    load_evaluator,
    real_baseline,
    real_trained_grader,
    score,
)
from fedgan.evaluation.fidelity import fd
from fedgan.evaluation.grader import predict_grades
from fedgan.evaluation.probe import QualityProbe
from fedgan.evaluation.results import REAL_TRAINED
from fedgan.evaluation.structure import StructureSpace, raw_features
from fedgan.runfolder import GRADE_KAPPA
from fedgan.training.loop import new_state


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sets of 300 real 64 px photographs: a reference and one to spoil."""
    root = tmp_path_factory.mktemp("structure")
    write_fundus_set(root / "eyepacs", count=600, size=128, seed=5, workers=2, progress=False)
    store = prepare_store(
        root / "eyepacs",
        root / "store",
        preprocess_config=PreprocessConfig(size=64),
        store_config=StoreConfig(heldout_fraction=0.5),
        workers=2,
        progress=False,
    ).out
    return Store(store).load("train")[0], Store(store).load("heldout")[0]


def per_image(images: np.ndarray, transform) -> np.ndarray:  # noqa: ANN001 - (H x W float32) -> H x W
    return np.stack([transform(image[0])[None] for image in images]).astype(np.float32)


def distances(halves: tuple[np.ndarray, np.ndarray], spoiled: list[np.ndarray]) -> list[float]:
    reference, _ = halves
    space = StructureSpace.fit(reference)
    real = space.embed(reference)
    return [fd(real, space.embed(images)) for images in spoiled]


def assert_increasing(values: list[float]) -> None:
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values


def test_blur(halves: tuple[np.ndarray, np.ndarray]) -> None:
    other = halves[1]
    spoiled = [
        other,
        *(per_image(other, lambda x, s=sigma: cv2.GaussianBlur(x, (0, 0), s)) for sigma in (0.6, 1.2, 2.4)),
    ]
    assert_increasing(distances(halves, spoiled))


def test_checkerboard_overlay(halves: tuple[np.ndarray, np.ndarray]) -> None:
    other = halves[1]
    size = other.shape[-1]
    checker = np.where((np.arange(size)[:, None] + np.arange(size)[None, :]) % 2 == 0, 1.0, -1.0).astype(np.float32)
    spoiled = [np.clip(other + amplitude * checker, -1, 1) for amplitude in (0.0, 0.04, 0.08, 0.16)]
    assert_increasing(distances(halves, spoiled))


def test_fading_out_the_vessels(halves: tuple[np.ndarray, np.ndarray]) -> None:
    """A grayscale closing fills every thin dark line (the vessels) and little else; blending
    towards it fades the vessel tree out."""
    other = halves[1]
    closed = per_image(
        other, lambda x: cv2.morphologyEx(x, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    )
    spoiled = [other + strength * (closed - other) for strength in (0.0, 0.35, 0.7, 1.0)]
    assert_increasing(distances(halves, spoiled))


def test_shrinking_diversity(halves: tuple[np.ndarray, np.ndarray]) -> None:
    other = halves[1]
    spoiled = [np.concatenate([other[: len(other) // copies]] * copies) for copies in (1, 4, 15, 60)]
    assert_increasing(distances(halves, spoiled))


def test_features_are_a_fixed_function_of_each_image() -> None:
    images = np.random.default_rng(0).uniform(-1, 1, (20, 1, 32, 32)).astype(np.float32)
    whole = raw_features(images)
    assert whole.shape == (20, 320) and np.isfinite(whole).all()
    assert np.allclose(
        whole,
        np.concatenate([raw_features(images[:1], batch_size=1), raw_features(images[1:], batch_size=7)]),
        atol=1e-6,
    )


def test_probe_measures_a_generator_in_both_spaces(fundus_set: Path, tmp_path: Path) -> None:
    store = prepare_store(
        fundus_set,
        tmp_path / "store",
        preprocess_config=PreprocessConfig(size=16),
        store_config=StoreConfig(heldout_fraction=0.4),
        workers=1,
        progress=False,
    ).out
    evaluator = load_evaluator(store)
    assert evaluator.embed(Store(store).load("train")[0][:4], "structure").shape == (4, 320) and HEADLINE == "structure"
    probe = QualityProbe.for_store(store, count=32)
    state = new_state(
        CONDITIONAL,
        TrainConfig(),
        torch.device("cpu"),
    )
    stream = torch.get_rng_state()
    first, again = probe(state), probe(state)  # the first trains the grade kappa's grader...
    resumed = QualityProbe.for_store(store, count=32)(state)  # ...a resumed run's probe finds it cached...
    assert torch.equal(torch.get_rng_state(), stream)  # ...and neither touches the training's random stream
    assert (
        set(first) == {"kid", "fd", "kid_grader", "fd_grader", GRADE_KAPPA} and first == again == resumed
    )  # fixed noise: same model, same numbers
    assert all(np.isfinite(v) for v in first.values()) and first["fd"] > 0 and -1 <= first[GRADE_KAPPA] <= 1
    assert set(SPACES) == {"structure", "grader"}
    assert GRADE_KAPPA not in probe(new_state(TINY, TrainConfig(), torch.device("cpu")))  # no grades asked for

    # The grader that reads the grades is the real baseline's, trained once on the training split.
    grader = real_trained_grader(store, evaluator)
    assert (evaluator_folder(Store(store)) / REAL_GRADER_FILE).is_file()
    images, labels = Store(store).load("train")
    assert np.array_equal(predict_grades(grader, images), predict_grades(probe.grader, images))
    _, test = heldout_halves(Store(store))
    assert real_baseline(store, evaluator)[REAL_TRAINED] == score(grader, *Store(store).load("heldout", test))


class BrightnessGrader(torch.nn.Module):
    """Reads grade g from an image of mean brightness g / 4 (in [0, 1] after mapping from [-1, 1])."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grade = ((images.mean(dim=(1, 2, 3)) + 1) / 2 * 4).round().long().clamp(0, 4)
        return torch.nn.functional.one_hot(grade, 5).float()


class Painter(torch.nn.Module):
    """A stand-in generator: flat images whose brightness encodes the grade asked for, or a grade of its own."""

    def __init__(self, follows_grades: bool) -> None:
        super().__init__()
        self.follows_grades = follows_grades

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        grades = labels if self.follows_grades else (z[:, 0].abs() * 10).long() % 5
        return (grades.float() / 4 * 2 - 1).view(-1, 1, 1, 1).expand(-1, 1, 16, 16)


def test_grade_kappa_is_one_when_images_carry_their_grades_and_near_zero_when_not(
    fundus_set: Path, tmp_path: Path
) -> None:
    store = small_store(fundus_set, tmp_path / "store", 16, 0.4)
    probe = dataclasses.replace(QualityProbe.for_store(store, count=400), grader=BrightnessGrader())
    probe.grade_frequencies = np.full(5, 0.2)
    kappas = {
        follows: probe(SimpleNamespace(model_config=CONDITIONAL, sampler=Painter(follows), device=torch.device("cpu")))[
            GRADE_KAPPA
        ]
        for follows in (True, False)
    }
    assert kappas[True] == pytest.approx(1.0) and abs(kappas[False]) < 0.15
