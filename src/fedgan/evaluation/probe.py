"""Quality while training: KID and FD of a small fixed-noise sample on the store's fixed evaluator.

A loss curve of a GAN says little about its images; KID against the real training split, in
the evaluator's structure space (and its grader space), does. A probe embeds the real images
once and then costs one generator pass over `count` images plus two embeddings, about a second
for 256 images at 64 px on a CPU, so it can run every few hundred steps or every round. The
noise (and the grades of a conditional model) are the same at every call, so the curve moves
only because the generator does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fedgan.config import NUM_GRADES
from fedgan.data.store import Store
from fedgan.evaluation.evaluate import generated_set
from fedgan.evaluation.evaluator import HEADLINE, SPACES, Evaluator, load_evaluator
from fedgan.evaluation.fidelity import fd, kid
from fedgan.training.loop import Sampling


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

    @classmethod
    def for_store(cls, store_path: Path, *, count: int = 256, seed: int = 0) -> QualityProbe:
        store = Store(store_path)
        evaluator = load_evaluator(store_path)
        images, labels = store.load("train")
        frequencies = np.bincount(labels[labels >= 0], minlength=NUM_GRADES).astype(np.float64)
        frequencies = frequencies / frequencies.sum() if frequencies.sum() else np.full(NUM_GRADES, 1 / NUM_GRADES)
        return cls(evaluator, {space: evaluator.embed(images, space) for space in SPACES}, frequencies, count, seed)

    def __call__(self, state: Sampling) -> dict[str, float]:
        images, _ = generated_set(
            state, self.count, self.grade_frequencies if state.model_config.conditional else None, self.seed
        )
        result = {}
        for space in SPACES:
            fake = self.evaluator.embed(images, space)
            kid_key, fd_key = probe_keys(space)
            result[kid_key] = kid(self.real[space], fake, subsets=20, seed=self.seed)
            result[fd_key] = fd(self.real[space], fake)
        return result
