"""Quality while training: KID and FD of a small fixed-noise sample on the store's fixed evaluator.

A loss curve of a GAN says little about its images; KID against the real training split, in
the evaluator's structure space (and its grader space), does. A probe embeds the real images
once and then costs one generator pass over `count` images plus two embeddings, about a second
for 256 images at 64 px on a CPU, so it can run every few hundred steps or every round. The
noise (and the grades of a conditional model) are the same at every call, so the curve moves
only because the generator does.

For a conditional generator it also reports `grade_kappa`: whether its images carry the grades
they were asked for, as a grader trained on the real training split reads them (`grade_agreement`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fedgan.config import NUM_GRADES
from fedgan.data.store import Store
from fedgan.evaluation.evaluate import generated_set
from fedgan.evaluation.evaluator import HEADLINE, SPACES, Evaluator, load_evaluator, real_trained_grader
from fedgan.evaluation.fidelity import fd, kid
from fedgan.evaluation.grader import GradeNet, predict_grades
from fedgan.evaluation.kappa import quadratic_weighted_kappa
from fedgan.runfolder import GRADE_KAPPA
from fedgan.training.loop import Sampling


def grade_agreement(grader: GradeNet, images: np.ndarray, grades: np.ndarray) -> float:
    """Quadratic kappa between the grades images were generated for and the grades a grader
    trained on the real training split reads from them (`evaluator.real_trained_grader`):
    "GAN-test" (Shmelkov et al. 2018). Why: KID can fall while every grade looks alike, which
    leaves a synthetic set useless for training a grader. Real held-out images with their true
    grades score the grader's own kappa (0.73 on the 2,000-image store); 0 means the grades are
    not in the images. A generator that copied its training images would score at least that:
    memorisation is the privacy audit's to find, not this."""
    return quadratic_weighted_kappa(grades, predict_grades(grader, images))


def probe_keys(space: str) -> tuple[str, str]:
    """Names of (KID, FD) in a metrics line: plain for the headline space, suffixed otherwise."""
    return ("kid", "fd") if space == HEADLINE else (f"kid_{space}", f"fd_{space}")


@dataclasses.dataclass
class QualityProbe:
    evaluator: Evaluator
    real: dict[str, np.ndarray]  # space -> features of the real training split
    grade_frequencies: np.ndarray  # of the training split, for a conditional generator's grades
    count: int
    seed: int
    store: Path
    grader: GradeNet | None = None  # for `grade_agreement`: trained (or read from the cache) on first use

    @classmethod
    def for_store(cls, store_path: Path, *, count: int = 256, seed: int = 0) -> QualityProbe:
        store = Store(store_path)
        evaluator = load_evaluator(store_path)
        images, labels = store.load("train")
        frequencies = np.bincount(labels[labels >= 0], minlength=NUM_GRADES).astype(np.float64)
        frequencies = frequencies / frequencies.sum() if frequencies.sum() else np.full(NUM_GRADES, 1 / NUM_GRADES)
        return cls(
            evaluator, {space: evaluator.embed(images, space) for space in SPACES}, frequencies, count, seed, store_path
        )

    def __call__(self, state: Sampling) -> dict[str, float]:
        images, grades = generated_set(
            state, self.count, self.grade_frequencies if state.model_config.conditional else None, self.seed
        )
        result = {}
        if grades is not None:
            if self.grader is None:
                self.grader = real_trained_grader(self.store, self.evaluator)
            result[GRADE_KAPPA] = grade_agreement(self.grader, images, grades)
        for space in SPACES:
            fake = self.evaluator.embed(images, space)
            kid_key, fd_key = probe_keys(space)
            result[kid_key] = kid(self.real[space], fake, subsets=20, seed=self.seed)
            result[fd_key] = fd(self.real[space], fake)
        return result
