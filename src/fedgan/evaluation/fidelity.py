"""Fidelity of generated images in a feature space: distances between two sets of embeddings.

All functions take (N, D) float arrays of features (real first, generated second) from the same
fixed evaluator, so numbers are comparable between runs only when the evaluator is the same one
(its hash is recorded with every result).

- Fréchet distance (FD): between Gaussians fitted to each set (Heusel et al. 2017). Biased for
  small N, so compare runs at the same sample counts.
- KID: unbiased MMD² with the cubic polynomial kernel, averaged over random subsets
  (Bińkowski et al. 2018); unbiased at any N, which is why small federated studies prefer it.
- Precision / recall (Kynkäänniemi et al. 2019): share of generated samples inside the real
  manifold (k-NN balls around real samples), and vice versa.
- Density / coverage (Naeem et al. 2020): how many real balls a generated sample falls into
  (/k), and the share of real balls that hold at least one generated sample; robust to outliers.
- Realism score (Kynkäänniemi et al. 2019): per generated sample, max over real samples of
  radius / distance; > 1 means inside some real ball. Real samples with the largest half of
  radii are left out, as in the paper, so outliers cannot make everything look realistic.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy import linalg

Metric = Callable[[np.ndarray, np.ndarray], dict[str, float]]


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½) for two Gaussians."""
    with (
        warnings.catch_warnings()
    ):  # covariances of fewer samples than dimensions are singular: expected, handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():  # regularise, as the reference implementation does
            offset = np.eye(len(sigma1)) * 1e-6
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fd(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 50, subset_size: int = 100, seed: int = 0) -> float:
    """Mean unbiased MMD² over `subsets` random subsets of min(subset_size, N) samples each."""
    rng = np.random.default_rng(seed)
    size = min(subset_size, len(real), len(fake))
    dim = real.shape[1]
    values = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), size, replace=False)]
        y = fake[rng.choice(len(fake), size, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off = size * (size - 1)
        values.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2 * kxy.mean())
    return float(np.mean(values))


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0))


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance of each sample to its k-th nearest other sample."""
    distances = pairwise_distances(features, features)
    return np.partition(distances, k, axis=1)[:, k]  # column 0 is the sample itself


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall (k-NN manifolds) and density, coverage (real k-NN balls)."""
    real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
    real_fake = pairwise_distances(real, fake)  # (R, F)
    inside_real = real_fake < real_radii[:, None]  # fake j inside the ball of real i
    return {
        "precision": float(inside_real.any(0).mean()),
        "recall": float((real_fake < fake_radii[None, :]).any(1).mean()),
        "density": float(inside_real.sum(0).mean() / k),
        "coverage": float((real_fake.min(1) < real_radii).mean()),
    }


def realism_scores(real: np.ndarray, fake: np.ndarray, k: int = 3) -> np.ndarray:
    """Kynkäänniemi et al.'s per-sample realism score of each generated sample."""
    radii = knn_radii(real, k)
    kept = radii <= np.median(radii)
    distances = pairwise_distances(fake, real[kept])
    return (radii[kept][None, :] / np.maximum(distances, 1e-12)).max(1)


def fidelity(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Every fidelity metric for one pair of feature sets."""
    return {
        "fd": fd(real, fake),
        "kid": kid(real, fake),
        **prdc(real, fake),
        "realism_score": float(realism_scores(real, fake).mean()),
    }


DRAWS = 10


def over_draws(metric: Metric, real: np.ndarray, fakes: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Each metric's mean over independently generated sets of one size, with a 95 % interval.

    The generated side is redrawn (fresh noise, the same number of images) rather than
    resampled: resampling puts duplicates in a set, which collapses k-NN radii to zero, and
    subsets change N, which biases FD and the manifold metrics. The real set stays fixed, so the
    interval is the spread due to the generator's sampling, the part that differs between models.
    """
    values = [metric(real, fake) for fake in fakes]
    return {
        name: {
            "value": float(np.mean([v[name] for v in values])),
            "low": float(np.percentile([v[name] for v in values], 2.5)),
            "high": float(np.percentile([v[name] for v in values], 97.5)),
        }
        for name in values[0]
    }
