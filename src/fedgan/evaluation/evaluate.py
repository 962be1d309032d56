"""`fedgan evaluate RUN --real STORE`: every metric of a run's final generator into RUN/eval/metrics.json.

What is compared with what:
- generated images: `count` samples from the latest checkpoint (conditional: grades drawn with
  the real training split's grade frequencies), noise from the seed;
- fidelity: against the store's `train` split (the distribution the GAN was asked to learn), in
  both of the fixed evaluator's feature spaces, as the mean over 10 generated sets with a 95 %
  interval (see `over_draws`): `fidelity` in the headline structure space, `fidelity_grader` in
  the grader's; per grade (first set, structure space) when conditional;
- the paper's realism score: mean sigmoid output of a *reference* discriminator (`--reference`
  checkpoint, the same for every model compared; the sweep uses its centralised baseline) on
  the generated images. Without one it is left out rather than computed with the run's own D;
- utility (TSTR): the evaluator's grader architecture trained on the generated images and their
  grades, tested on the real test half of the held-out split, beside the same grader trained on
  real images. Not applicable to an unconditional generator (its images carry no grade);
- with `inception_weights`, the standard FID as well (see `inception.py`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedgan.atomic import write_text_atomic
from fedgan.config import NUM_GRADES
from fedgan.data.store import Store
from fedgan.errors import FedGANError
from fedgan.evaluation.evaluator import HEADLINE, heldout_halves, load_evaluator, real_baseline, score
from fedgan.evaluation.fidelity import DRAWS, fd, fidelity, over_draws, prdc
from fedgan.evaluation.grader import train_grader
from fedgan.evaluation.inception import inception_features, load_inception
from fedgan.evaluation.results import (
    FID,
    FIDELITY,
    FIDELITY_GRADER,
    FIDELITY_PER_GRADE,
    PAPER_REALISM,
    REAL_TRAINED,
    SYNTHETIC_TRAINED,
    UTILITY,
    VALUE,
    result_path,
)
from fedgan.training.loop import Sampling, generate
from fedgan.training.trained import load_trained

log = logging.getLogger(__name__)

MIN_PER_GRADE = 10  # fewer samples of a grade give no meaningful per-grade distance


def generated_set(
    state: Sampling, count: int, grade_frequencies: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """`count` generated images (and grades when conditional), reproducible from `seed`."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(count, state.model_config.latent_dim, generator=rng)
    labels = None
    if state.model_config.conditional:
        assert grade_frequencies is not None
        labels = torch.multinomial(torch.from_numpy(grade_frequencies).float(), count, replacement=True, generator=rng)
    images = generate(state, z, labels).numpy()
    return images, None if labels is None else labels.numpy()


def paper_realism(reference: Path, images: np.ndarray, labels: np.ndarray | None) -> float:
    """Mean sigmoid of the reference discriminator on generated images (the paper's score)."""
    state = load_trained(reference)
    discriminator = state.judge(reference, "the paper's realism score")
    if state.model_config.conditional and labels is None:
        raise FedGANError(
            f"{reference}: a conditional reference discriminator cannot score an unconditional generator's images"
        )
    with torch.no_grad():
        scores = [
            torch.sigmoid(
                discriminator(
                    torch.from_numpy(images[i : i + 256]),
                    None
                    if labels is None or not state.model_config.conditional
                    else torch.from_numpy(labels[i : i + 256]),
                )
            )
            for i in range(0, len(images), 256)
        ]
    return float(torch.cat(scores).mean())


def per_grade(
    real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray
) -> dict[str, dict[str, float]]:
    out = {}
    for grade in range(NUM_GRADES):
        r, f = real[real_labels == grade], fake[fake_labels == grade]
        if min(len(r), len(f)) >= MIN_PER_GRADE:
            out[str(grade)] = {
                "fd": fd(r, f),
                **prdc(r, f, k=min(5, len(r) - 1, len(f) - 1)),
                "real": len(r),
                "generated": len(f),
            }
    return out


def evaluate_run(
    run: Path,
    real_store: Path,
    *,
    count: int | None = None,
    reference: Path | None = None,
    seed: int = 0,
    inception_weights: Path | None = None,
    draws: int = DRAWS,
) -> dict[str, Any]:
    """`draws` generated sets give the intervals; fewer are cheaper where sampling is slow (a DDPM on a CPU)."""
    state = load_trained(run)
    store = Store(real_store)
    inception = load_inception(inception_weights) if inception_weights else None  # fail before any work
    config = state.model_config
    if tuple(store.image_shape) != (config.channels, config.resolution, config.resolution):
        raise FedGANError(
            f"{real_store}: images are {store.image_shape}, the run's generator makes "
            f"{(config.channels, config.resolution, config.resolution)}"
        )
    evaluator = load_evaluator(real_store)
    real_images, real_labels = store.load("train")
    frequencies = np.bincount(real_labels[real_labels >= 0], minlength=NUM_GRADES) if config.conditional else None
    grade_frequencies = None if frequencies is None else frequencies / frequencies.sum()
    images, labels = generated_set(state, count or len(real_images), grade_frequencies, seed)
    generated = [
        images,
        *(generated_set(state, len(images), grade_frequencies, seed + draw)[0] for draw in range(1, draws)),
    ]
    real_features = evaluator.embed(real_images)
    fake_features = [evaluator.embed(draw) for draw in generated]
    baseline = real_baseline(real_store, evaluator)
    result: dict[str, Any] = {
        "run": str(Path(run).resolve()),
        "checkpoint_round": state.completed,
        "real_store": str(store.path.resolve()),
        "evaluator_sha256": evaluator.sha256,
        "seed": seed,
        "counts": {"real": len(real_images), "generated": len(images), "evaluator": len(heldout_halves(store)[0])},
        "headline_space": HEADLINE,
        FIDELITY: over_draws(fidelity, real_features, fake_features),
        FIDELITY_GRADER: over_draws(
            fidelity, evaluator.embed(real_images, "grader"), [evaluator.embed(d, "grader") for d in generated]
        ),
        "intervals": {"draws": draws},
        UTILITY: {
            REAL_TRAINED: baseline[REAL_TRAINED],
            "evaluator": baseline["evaluator"],
            "test_images": baseline["test_images"],
        },
    }
    if labels is not None:
        result[FIDELITY_PER_GRADE] = per_grade(real_features, real_labels, fake_features[0], labels)
        _, test = heldout_halves(store)
        test_images, test_labels = store.load("heldout", test)
        result[UTILITY][SYNTHETIC_TRAINED] = score(train_grader(images, labels), test_images, test_labels)
    else:
        result[UTILITY][SYNTHETIC_TRAINED] = {
            "applicable": False,
            "reason": "an unconditional generator's images carry no grade",
        }
    if inception is not None:
        model, sha256 = inception
        result[FID] = {
            VALUE: fd(inception_features(model, real_images), inception_features(model, images)),
            "weights": str(Path(inception_weights).resolve()),
            "weights_sha256": sha256,
        }
    if reference is not None:
        result[PAPER_REALISM] = {
            VALUE: paper_realism(reference, images, labels),
            "reference": str(Path(reference).resolve()),
        }
    out = result_path(run)
    out.parent.mkdir(exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=2))
    return result
