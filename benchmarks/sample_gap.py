"""Where a trained GAN's samples sit apart from the photographs, and whether their grades live in
pixel grain. One trained run, no training, in one run.

Two questions that the headline figures cannot answer:

1. **Is the gap a shift or a narrowness?** For each block of the structure space this prints the
   distance between the mean of the samples and the mean of the store's training images, and the
   samples' spread relative to the real images' (real held-out images, scored the same way, show
   what a perfect generator gives). Then KID, precision and recall again with the samples' mean
   moved onto the real mean, and with their spread widened to the real spread as well: what
   removing each fault alone would buy.
2. **Does the grade head read the grades from grain?** The share of samples that the run's own
   grade head reads as the grade they were asked for, and of real held-out images read as their
   grade, before and after a 3x3 median filter, which removes single-pixel grain and keeps
   vessels and lesions of two pixels and more. Real lesions are small dots, so filtering lowers the
   real images' share a little too; where it lowers the samples' share much more, the generator
   carries much of the grade in single-pixel patterns the head rewards (adversarial patterns rather
   than lesions), which a grader trained on the samples cannot use on photographs.

    python benchmarks/sample_gap.py --run RUN --store STORE
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sampling_spread import noise_and_data_grades

from fedgan.config import NUM_GRADES
from fedgan.data.store import Store
from fedgan.evaluation.evaluator import heldout_halves, load_evaluator
from fedgan.evaluation.fidelity import kid, prdc
from fedgan.evaluation.structure import BLOCKS
from fedgan.training.loop import generate
from fedgan.training.trained import load_trained


def median3(images: np.ndarray) -> np.ndarray:
    """A 3x3 median filter per channel (edges replicated), exact in float."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    n, c, h, w = x.shape
    patches = F.unfold(F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate"), 3)
    return patches.median(dim=1).values.reshape(n, c, h, w).numpy()


def spread(features: np.ndarray) -> float:
    return float(np.linalg.norm(features - features.mean(0), axis=1).mean())


def fit_line(name: str, real: np.ndarray, fake: np.ndarray) -> str:
    fit = prdc(real, fake)
    return (
        f"{name:44s} KID {kid(real, fake):7.3f}  precision {fit['precision']:.2f}  recall {fit['recall']:.2f}  "
        f"coverage {fit['coverage']:.3f}"
    )


def grade_reading(discriminator: torch.nn.Module, images: np.ndarray, grades: np.ndarray) -> float:
    """Balanced accuracy of the discriminator's grade head on `images` of `grades`: the mean over
    grades of the share read as their grade, so that grade 0's majority does not hide the rest."""
    x, labels = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), torch.from_numpy(grades).long()
    with torch.no_grad():
        _, read, _ = discriminator.logits_and_grades(x, labels)
    hits = (read.argmax(1) == labels).float()
    return float(np.mean([hits[labels == g].mean() for g in labels.unique()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained run folder (a GAN's or a DDPM's)")
    parser.add_argument("--store", type=Path, required=True, help="the store it was trained on")
    parser.add_argument("--seed", type=int, default=1, help="draws the samples' noise and grades")
    args = parser.parse_args()
    store = Store(args.store)
    evaluator = load_evaluator(args.store)
    real, grades = store.load("train")
    _, test = heldout_halves(store)
    heldout, heldout_grades = store.load("heldout", test)
    heldout, heldout_grades = heldout[: len(real)], heldout_grades[: len(real)]
    state = load_trained(args.run)
    z, labels = noise_and_data_grades(state.model_config.latent_dim, grades, args.seed)
    samples = generate(state, z, labels if state.model_config.conditional else None).numpy()

    real_f, held_f, fake_f = (evaluator.embed(x, "structure") for x in (real, heldout, samples))
    print(f"{len(real)} samples against the store's {len(real)} training images, structure space")
    header = f"{'mean shift: real held-out':>26s} {'samples':>8s}   {'spread / real: held-out':>24s} {'samples':>8s}"
    print(f"{'block':14s} {header}")
    start = 0
    for name, size in (*BLOCKS, ("all", real_f.shape[1])):
        cols = slice(start, start + size) if name != "all" else slice(None)
        start += size if name != "all" else 0
        shift = [np.linalg.norm(f[:, cols].mean(0) - real_f[:, cols].mean(0)) for f in (held_f, fake_f)]
        ratio = [spread(f[:, cols]) / spread(real_f[:, cols]) for f in (held_f, fake_f)]
        print(f"{name:14s} {shift[0]:26.2f} {shift[1]:8.2f}   {ratio[0]:24.2f} {ratio[1]:8.2f}")
    print(fit_line("real held-out images", real_f, held_f))
    print(fit_line("samples", real_f, fake_f))
    moved = fake_f - fake_f.mean(0) + real_f.mean(0)
    print(fit_line("samples, mean moved onto the real mean", real_f, moved))
    widened = real_f.mean(0) + (fake_f - fake_f.mean(0)) * spread(real_f) / spread(fake_f)
    print(fit_line("  and spread widened to the real spread", real_f, widened))

    discriminator = state.discriminator
    if discriminator is None or discriminator.grade_head is None:
        print("the run has no grade head (a DDPM, or a GAN trained without one): no grade reading to test")
        return
    discriminator.eval()
    asked = torch.arange(len(real)) % NUM_GRADES  # every grade equally often
    even = generate(state, z, asked).numpy()
    asked = asked.numpy()
    print("balanced accuracy of the run's grade head (chance 0.20):")
    print(
        f"  samples, asked grades drawn evenly: {grade_reading(discriminator, even, asked):.3f}, "
        f"after a 3x3 median filter {grade_reading(discriminator, median3(even), asked):.3f}"
    )
    print(
        f"  real held-out images:               "
        f"{grade_reading(discriminator, heldout, heldout_grades):.3f}, "
        f"after a 3x3 median filter {grade_reading(discriminator, median3(heldout), heldout_grades):.3f}"
    )


if __name__ == "__main__":
    main()
