"""`fedgan audit`: how much a released generator (and the discriminator FedAvg ships) leaks.

Membership inference asks, for a real image, "was it in the training set?". An attack gives
each image a score; members should score higher. It is measured on `members` (images the GAN
trained on) against `non-members` (images of the same distribution it never saw), as ROC AUC
(0.5: no better than chance) and TPR at 1 % FPR (what a careful attacker achieves when false
accusations must be rare), each with a 95 % bootstrap interval.

- GAN-Leaks, full black-box (Chen et al. 2020): draw `samples` images from the generator; an
  image's score is minus its distance to the closest one. With a *reference* generator trained
  on other data of the same distribution, the score is calibrated: minus (distance to the target
  generator's samples - distance to the reference's), which removes how typical an image is.
- LOGAN, white-box (Hayes et al. 2019): the score is the released discriminator's output on the
  image. FedAvg sends the global discriminator to every hospital each round, so any hospital can
  run it against the others' patients.
- For a DDPM, which has no discriminator, the white-box attack is its own loss (Matsumoto et al.
  2023; Carlini et al. 2023): an image's score is minus the denoiser's error on it at a few low
  noise levels, with fixed noise. FedAvg ships the UNet to every hospital, so the threat is the same.
- Memorisation: the distance of each generated image to its closest training image (DCR) against
  the same for held-out real images; generated images much closer than held-out ones are copies.
  The closest pairs are kept for the report.

Distances are Euclidean in pixel space on the preprocessed images, as GAN-Leaks uses.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedgan.atomic import write_bytes_atomic, write_text_atomic
from fedgan.data.store import Store
from fedgan.errors import FedGANError
from fedgan.evaluation.evaluate import generated_set
from fedgan.models.ddpm import Denoiser
from fedgan.runfolder import RunFolder
from fedgan.training.loop import GANState
from fedgan.training.trained import TrainedModel, load_trained

#: the white-box attack on a DDPM: noise levels (as fractions of its timesteps) at which its error is measured; low
#: levels, where a denoiser that memorised an image reconstructs it best (Matsumoto et al. 2023 found t ~ 100 of 1000)
ATTACK_LEVELS = (0.05, 0.1, 0.2)

FPR = 0.01
LOGAN, DENOISING = "logan", "denoising_loss"  # the white-box attack's key in privacy.json: a GAN's, a DDPM's
#: each attack's key in privacy.json and its title
ATTACKS = {
    "gan_leaks": "GAN-Leaks, black-box (generated samples)",
    LOGAN: "LOGAN, white-box (shipped discriminator)",
    DENOISING: "denoising loss, white-box (shipped UNet)",
}
PAIRS_FILE = "privacy-pairs.npz"  # the closest generated/training pairs, for the report


def roc_auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """P(score of a random member > score of a random non-member), ties counting half."""
    greater = (members[:, None] > non_members[None, :]).mean()
    ties = (members[:, None] == non_members[None, :]).mean()
    return float(greater + 0.5 * ties)


def tpr_at_fpr(members: np.ndarray, non_members: np.ndarray, fpr: float = FPR) -> float:
    """Share of members flagged at the threshold that flags at most `fpr` of non-members."""
    threshold = np.quantile(non_members, 1 - fpr, method="higher")
    return float((members > threshold).mean())


def attack_result(members: np.ndarray, non_members: np.ndarray, draws: int = 200, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    aucs, tprs = [], []
    for _ in range(draws):
        m = members[rng.integers(0, len(members), len(members))]
        n = non_members[rng.integers(0, len(non_members), len(non_members))]
        aucs.append(roc_auc(m, n))
        tprs.append(tpr_at_fpr(m, n))
    return {
        "auc": {
            "value": roc_auc(members, non_members),
            "low": float(np.percentile(aucs, 2.5)),
            "high": float(np.percentile(aucs, 97.5)),
        },
        "tpr_at_1pct_fpr": {
            "value": tpr_at_fpr(members, non_members),
            "low": float(np.percentile(tprs, 2.5)),
            "high": float(np.percentile(tprs, 97.5)),
        },
        "members": len(members),
        "non_members": len(non_members),
    }


def nearest(queries: np.ndarray, pool: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each query to its closest pool image, and that image's index."""
    flat_pool = pool.reshape(len(pool), -1).astype(np.float64)
    pool_norms = (flat_pool * flat_pool).sum(1)
    distances, indices = [], []
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk].reshape(-1, flat_pool.shape[1]).astype(np.float64)
        squared = (q * q).sum(1)[:, None] + pool_norms[None, :] - 2 * q @ flat_pool.T
        best = squared.argmin(1)
        indices.append(best)
        distances.append(np.sqrt(np.maximum(squared[np.arange(len(q)), best], 0)))
    return np.concatenate(distances), np.concatenate(indices)


def discriminator_scores(state: GANState | TrainedModel, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    state.discriminator.eval()
    conditional = state.model_config.conditional
    with torch.no_grad():
        return torch.cat(
            [
                state.discriminator(
                    torch.from_numpy(images[i : i + 256]),
                    torch.from_numpy(labels[i : i + 256]) if conditional else None,
                )
                for i in range(0, len(images), 256)
            ]
        ).numpy()


def denoising_scores(denoiser: Denoiser, images: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Minus each image's mean denoising error over `ATTACK_LEVELS`, with noise fixed by `seed`."""
    config = denoiser.config
    rng = torch.Generator().manual_seed(seed)
    scores = []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            batch = torch.from_numpy(images[i : i + 256])
            grades = torch.from_numpy(labels[i : i + 256]).long() if config.conditional else None
            error = torch.zeros(len(batch))
            for level in ATTACK_LEVELS:
                steps = torch.full((len(batch),), int(level * config.timesteps), dtype=torch.long)
                error += denoiser.errors(batch, grades, steps, torch.randn(batch.shape, generator=rng))
            scores.append(-error / len(ATTACK_LEVELS))
    return torch.cat(scores).numpy()


def white_box(
    state: TrainedModel,
    run: Path,
    members: tuple[np.ndarray, np.ndarray],
    others: tuple[np.ndarray, np.ndarray],
    seed: int,
) -> tuple[str, dict[str, Any]]:
    """The white-box attack on what FedAvg ships: LOGAN on a GAN's discriminator, the loss attack on a DDPM."""
    if isinstance(state.sampler, Denoiser):
        scores = [denoising_scores(state.sampler, images, labels, seed) for images, labels in (members, others)]
        return DENOISING, attack_result(*scores, seed=seed)
    state.judge(run, "the white-box attack (LOGAN)")
    return LOGAN, attack_result(*(discriminator_scores(state, *split) for split in (members, others)), seed=seed)


def load_split(spec: Path) -> tuple[np.ndarray, np.ndarray]:
    """`STORE` (its train split) or `STORE:heldout`."""
    text = str(spec)
    path, _, split = text.rpartition(":") if text.endswith((":train", ":heldout")) else (text, "", "train")
    return Store(Path(path)).load(split)


def audit(
    run: Path,
    members: Path,
    non_members: Path,
    *,
    samples: int = 1000,
    reference: Path | None = None,
    seed: int = 0,
    pairs: int = 8,
) -> dict[str, Any]:
    """Run every attack on RUN's latest checkpoint; write RUN/eval/privacy.json (and the closest pairs)."""
    state = load_trained(run)
    if not isinstance(state.sampler, Denoiser):
        state.judge(run, "the white-box attack (LOGAN)")  # before any work: a release has no discriminator
    member_images, member_labels = load_split(members)
    other_images, other_labels = load_split(non_members)
    if min(len(member_images), len(other_images)) < 5:
        raise FedGANError("the audit needs at least 5 member and 5 non-member images")
    size = min(len(member_images), len(other_images))  # balanced: AUC and TPR compare like with like
    rng = np.random.default_rng(seed)
    member_pick, other_pick = rng.permutation(len(member_images))[:size], rng.permutation(len(other_images))[:size]
    member_images, member_labels = member_images[member_pick], member_labels[member_pick]
    other_images, other_labels = other_images[other_pick], other_labels[other_pick]
    frequencies = np.bincount(np.clip(member_labels, 0, None), minlength=5).astype(np.float64)
    generated, _ = generated_set(
        state, samples, frequencies / frequencies.sum() if state.model_config.conditional else None, seed
    )
    member_distance, _ = nearest(member_images, generated)
    other_distance, _ = nearest(other_images, generated)
    calibration = "none"
    if reference is not None:
        reference_state = load_trained(reference)
        reference_images, _ = generated_set(
            reference_state,
            samples,
            frequencies / frequencies.sum() if reference_state.model_config.conditional else None,
            seed,
        )
        member_distance = member_distance - nearest(member_images, reference_images)[0]
        other_distance = other_distance - nearest(other_images, reference_images)[0]
        calibration = str(Path(reference).resolve())
    result: dict[str, Any] = {
        "run": str(Path(run).resolve()),
        "members": str(members),
        "non_members": str(non_members),
        "generated": samples,
        "seed": seed,
        "gan_leaks": {**attack_result(-member_distance, -other_distance, seed=seed), "calibration": calibration},
    }
    attack, outcome = white_box(state, run, (member_images, member_labels), (other_images, other_labels), seed)
    result[attack] = outcome
    copy_distance, copy_index = nearest(generated, member_images)
    heldout_distance, _ = nearest(other_images, member_images)
    result["memorisation"] = {
        "generated_to_train": {"median": float(np.median(copy_distance)), "p5": float(np.percentile(copy_distance, 5))},
        "heldout_to_train": {
            "median": float(np.median(heldout_distance)),
            "p5": float(np.percentile(heldout_distance, 5)),
        },
        "ratio_of_medians": float(np.median(copy_distance) / max(np.median(heldout_distance), 1e-12)),
    }
    closest = np.argsort(copy_distance)[:pairs]
    out = RunFolder(Path(run)).evaluation
    out.mkdir(exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, generated=generated[closest], train=member_images[copy_index[closest]], distance=copy_distance[closest]
    )
    write_bytes_atomic(out / PAIRS_FILE, buffer.getvalue())
    write_text_atomic(out / "privacy.json", json.dumps(result, indent=2))
    return result
