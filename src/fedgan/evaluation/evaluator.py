"""The fixed evaluator of a real data set: two feature spaces that embed images.

Models are never judged by their own discriminator. Every run evaluated against a store uses the
one evaluator made for it from half of the store's `heldout` split (stratified by grade), which
no GAN ever reads; the other half is the real test set of the utility metrics. It has two
feature spaces, and every fidelity metric is reported in both:

- `structure` (the headline): fixed analytic features of layout, sharpness, orientation,
  vessels and tiling artefacts (`structure.py`), standardised on that half. It sees what a
  person sees: blur, checkerboards, missing vessels and repeated images all worsen its FD.
- `grader`: the penultimate features of a DR grader trained on that half. It tracks lesions,
  so it measures whether grades look right, and is blind to anatomy and artefacts.

The evaluator is made once per store and cached as `evaluator.pt`; its sha256 goes into every
result, so two numbers are comparable exactly when their hashes match. The real-data baseline
of the utility metrics (the same grader trained on the `train` split) is computed once with it
and cached beside it. The cache is outside the store (`evaluator_folder`): a store is data, may
sit on a read-only share, and is never written by reading it. A store from before this kept its
`evaluator.pt` inside; that one is still used, so its results stay comparable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedgan.atomic import write_bytes_atomic, write_text_atomic
from fedgan.data.partition import stratified_holdout
from fedgan.data.store import MANIFEST, Store
from fedgan.errors import FedGANError
from fedgan.evaluation.grader import GradeNet, GraderTraining, predict_grades, saved_grader, train_grader
from fedgan.evaluation.kappa import quadratic_weighted_kappa
from fedgan.evaluation.results import REAL_TRAINED
from fedgan.evaluation.structure import StructureSpace
from fedgan.torchfile import load_torch_file

log = logging.getLogger(__name__)

EVALUATOR_FILE = "evaluator.pt"
BASELINE_FILE = "evaluator-baseline.json"
REAL_GRADER_FILE = "real-trained-grader.pt"
SPLIT_SEED = 2024  # fixed: the evaluator's halves of the held-out split must not move between runs
EVALUATOR_VERSION = 2  # 2: the structure space was added; an older evaluator file is remade
SPACES = ("structure", "grader")
HEADLINE = "structure"  # the space of the headline fidelity metrics (see the module docstring)


@dataclasses.dataclass
class Evaluator:
    model: GradeNet
    structure: StructureSpace
    sha256: str
    path: Path

    def embed(self, images: np.ndarray, space: str = HEADLINE) -> np.ndarray:
        """Features of images in [-1, 1] in one of `SPACES`."""
        if space == "structure":
            return self.structure.embed(images)
        return self.grader_features(images)

    @torch.no_grad()
    def grader_features(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Penultimate features (N, 8 x width) of the grader."""
        self.model.eval()
        return np.concatenate(
            [
                self.model.features(torch.from_numpy(images[i : i + batch_size])).numpy().astype(np.float64)
                for i in range(0, len(images), batch_size)
            ]
        )


def heldout_halves(store: Store) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the held-out split: (evaluator training, real test set)."""
    labels = store.labels("heldout")
    if len(labels) < 10 or (labels < 0).any():
        raise FedGANError(
            f"{store.path}: the evaluator needs at least 10 graded held-out images, found {len(labels)} "
            "(prepare the store with graded data and --heldout > 0)"
        )
    test = stratified_holdout(labels, 0.5, SPLIT_SEED)
    return np.flatnonzero(~test), np.flatnonzero(test)


def score(model: GradeNet, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return grading_scores(predict_grades(model, images), labels)


def grading_scores(predicted: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Kappa and balanced accuracy first: screening data is mostly grade 0, so plain accuracy
    rewards a grader that always says 0 (0.72 here, above a real grader's 0.64). `single_grade`
    marks such a majority-class predictor."""
    recall = [float((predicted[labels == grade] == grade).mean()) for grade in np.unique(labels)]
    return {
        "kappa": quadratic_weighted_kappa(labels, predicted),
        "balanced_accuracy": float(np.mean(recall)),
        "accuracy": float((predicted == labels).mean()),
        "single_grade": bool(len(np.unique(predicted)) == 1),
    }


def evaluator_folder(store: Store) -> Path:
    """Where a store's evaluator and baseline are cached: `$FEDGAN_CACHE` (default
    ~/.cache/fedgan), under the sha256 of the store's manifest, which names its exact shards."""
    root = Path(os.environ.get("FEDGAN_CACHE") or Path.home() / ".cache" / "fedgan")
    folder = root / "evaluators" / hashlib.sha256((store.path / MANIFEST).read_bytes()).hexdigest()[:20]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cached(path: Path, what: str) -> dict[str, Any]:
    """A cache file's contents, or {} where there is none or it cannot be read: both caches are
    made from the store alone, so an unreadable one (a crash mid-copy, a disk error) is made again
    rather than stopping every evaluation of the store."""
    if not path.exists():
        return {}
    try:
        return load_torch_file(path, what)
    except FedGANError as problem:
        log.warning("%s; making it again", problem)
        return {}


def load_evaluator(store_path: Path, training: GraderTraining = GraderTraining()) -> Evaluator:
    """The store's evaluator, trained and saved on first use."""
    store = Store(store_path)
    legacy = store.path / EVALUATOR_FILE
    path = legacy if legacy.exists() else evaluator_folder(store) / EVALUATOR_FILE
    saved = cached(path, "evaluator")
    if saved.get("version") != EVALUATOR_VERSION:
        fit, _ = heldout_halves(store)
        images, labels = store.load("heldout", fit)
        log.info("making the evaluator of %s from %d held-out images", store.path, len(images))
        model = train_grader(images, labels, training)
        structure = StructureSpace.fit(images)
        buffer = io.BytesIO()
        torch.save(
            {
                "version": EVALUATOR_VERSION,
                "state": model.state_dict(),
                "in_channels": images.shape[1],
                "training": dataclasses.asdict(training),
                "fit_indices": fit.tolist(),
                "structure_mean": torch.from_numpy(structure.mean),
                "structure_scale": torch.from_numpy(structure.scale),
            },
            buffer,
        )
        write_bytes_atomic(path, buffer.getvalue())
    data = path.read_bytes()
    saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    structure = StructureSpace(saved["structure_mean"].numpy(), saved["structure_scale"].numpy())
    return Evaluator(
        saved_grader(int(saved["in_channels"]), saved["state"]), structure, hashlib.sha256(data).hexdigest(), path
    )


def real_baseline(
    store_path: Path, evaluator: Evaluator, training: GraderTraining = GraderTraining()
) -> dict[str, float]:
    """Accuracy and kappa on the real test half of a grader trained on the real `train` split
    (what a synthetic set is measured against), and of the evaluator itself; cached per evaluator."""
    store = Store(store_path)
    cache = evaluator_folder(store) / BASELINE_FILE
    if cache.exists() and (cached := json.loads(cache.read_text())).get("evaluator_sha256") == evaluator.sha256:
        if "balanced_accuracy" in cached[REAL_TRAINED]:  # caches from before it was measured are redone
            return cached
    _, test = heldout_halves(store)
    test_images, test_labels = store.load("heldout", test)
    result = {
        "evaluator_sha256": evaluator.sha256,
        REAL_TRAINED: score(real_trained_grader(store_path, evaluator, training), test_images, test_labels),
        "evaluator": score(evaluator.model, test_images, test_labels),
        "test_images": len(test_labels),
        "train_images": len(store.labels("train")),
    }
    write_text_atomic(cache, json.dumps(result, indent=2))
    return result


def real_trained_grader(
    store_path: Path, evaluator: Evaluator, training: GraderTraining = GraderTraining()
) -> GradeNet:
    """The grader trained on the store's real `train` split: the real baseline of the utility
    metrics, and the judge of whether generated images carry their grades
    (`probe.grade_agreement`). The evaluator's own grader cannot be that judge on every store: it
    learns from half the held-out split, and on the 2,000-image store (499 images, 21 of grades
    3-4) it reads real grades at kappa 0.08, where this one reaches 0.73. Cached beside the
    evaluator, for its hash and training settings."""
    store = Store(store_path)
    path = evaluator_folder(store) / REAL_GRADER_FILE
    saved = cached(path, "real-data grader")
    if saved.get("evaluator_sha256") == evaluator.sha256 and saved.get("training") == dataclasses.asdict(training):
        return saved_grader(int(saved["in_channels"]), saved["state"])
    images, labels = store.load("train")
    log.info("training the real-data grader of %s on its %d training images", store.path, len(images))
    model = train_grader(images, labels, training)
    buffer = io.BytesIO()
    torch.save(
        {
            "evaluator_sha256": evaluator.sha256,
            "training": dataclasses.asdict(training),
            "in_channels": images.shape[1],
            "state": model.state_dict(),
        },
        buffer,
    )
    write_bytes_atomic(path, buffer.getvalue())
    return model
