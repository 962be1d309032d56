"""Is structure recall within reach of sampling alone? One trained run, no training, in one run.

Recall counts a real image when it lies inside some sample's k-nearest-neighbour ball, so a set of
samples narrower than the photographs scores 0 however close it sits. This prints, in the store's
structure space against its training split (precision, recall, coverage, KID, and the samples'
mean distance from their mean relative to the real images'):
- real against real: the held-out images the evaluator does not use, as if they were samples
  (what the space gives a perfect generator);
- the run's published generator (the moving average), with z scaled by each `--z-scales` (above
  1 widens the samples, the reverse of the truncation trick);
- the same samples quantised to the store's grey levels (its `bins`), as the photographs are;
- the raw generator instead of its moving average.

    python benchmarks/sampling_spread.py --run RUN --store STORE [--z-scales 1,1.25,1.5]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from fedgan.config import NUM_GRADES
from fedgan.data.store import Store
from fedgan.evaluation.evaluator import heldout_halves, load_evaluator
from fedgan.evaluation.fidelity import kid, prdc
from fedgan.models.dcgan import Generator
from fedgan.training.checkpoint import read_checkpoint
from fedgan.training.loop import generate
from fedgan.training.trained import load_trained


def noise_and_data_grades(latent_dim: int, grades: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One noise vector per real image, and grades drawn at the real images' frequencies: samples
    comparable with the photographs one for one (`sample_gap.py` draws them the same way)."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(len(grades), latent_dim, generator=rng)
    frequencies = torch.from_numpy(np.bincount(grades, minlength=NUM_GRADES)).double()
    return z, torch.multinomial(frequencies, len(grades), replacement=True, generator=rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained GAN run folder")
    parser.add_argument("--store", type=Path, required=True, help="the store it was trained on")
    parser.add_argument("--z-scales", default="1,1.25,1.5")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    store = Store(args.store)
    evaluator = load_evaluator(args.store)
    real, grades = store.load("train")
    real_features = evaluator.embed(real, "structure")

    def show(name: str, images: np.ndarray) -> None:
        features = evaluator.embed(images, "structure")
        fit = prdc(real_features, features)
        spread = (
            np.linalg.norm(features - features.mean(0), axis=1).mean()
            / np.linalg.norm(real_features - real_features.mean(0), axis=1).mean()
        )
        print(
            f"{name:34s} KID {kid(real_features, features):8.3f}  precision {fit['precision']:.3f}  "
            f"recall {fit['recall']:.3f}  coverage {fit['coverage']:.3f}  spread / real {spread:.2f}",
            flush=True,
        )

    _, test = heldout_halves(store)
    show(f"real held-out ({min(len(test), len(real))} images)", store.load("heldout", test)[0][: len(real)])
    state = load_trained(args.run)
    z, labels = noise_and_data_grades(state.model_config.latent_dim, grades, args.seed)
    bins = int(store.manifest["preprocess"]["bins"])
    for scale in (float(s) for s in args.z_scales.split(",")):
        images = generate(state, z * scale, labels).numpy()
        show(f"moving average, z x {scale:g}", images)
        if scale == 1 and bins:
            show(f"moving average, {bins + 1} grey levels", np.round((images + 1) / 2 * bins) / bins * 2 - 1)
    raw = Generator(state.model_config)
    raw.load_state_dict(read_checkpoint(args.run)["generator"])
    show("raw generator, z x 1", generate(dataclasses.replace(state, sampler=raw.eval()), z, labels).numpy())


if __name__ == "__main__":
    main()
