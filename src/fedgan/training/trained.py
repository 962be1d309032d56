"""A checkpoint's networks for use, not for training: what evaluation, sampling and audits load.

`checkpoint.restore_state` rebuilds a whole training state to resume a run exactly: optimisers,
counters, and the process-wide torch RNG state, which it sets. Using a model needs none of that,
and must not reseed the caller's process as a side effect (as nanoGPT's `sample.py` rebuilds only
the model). `load_trained` builds the generator that publishes images (the moving average when
the checkpoint has one) and the discriminator (the paper's realism score and the white-box
audit use it), in eval mode, and touches no global state. It also reads a release
(`fedgan.training.release`), which has no discriminator.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from fedgan.config import DiffusionConfig, ModelConfig, model_from_record
from fedgan.errors import FedGANError
from fedgan.models.dcgan import Discriminator, build_models
from fedgan.models.ddpm import Denoiser
from fedgan.training.checkpoint import read_checkpoint
from fedgan.training.release import read_release, sampling_weights


@dataclasses.dataclass
class TrainedModel:
    """The attributes `loop.generate` and the evaluators read, as `GANState` has them."""

    model_config: ModelConfig
    sampler: nn.Module  # the moving average when the checkpoint has one, else the generator (or denoiser)
    discriminator: Discriminator | None  # None for a release, and for a DDPM
    completed: int  # rounds (federated) or epochs (centralised) behind this checkpoint

    @property
    def device(self) -> torch.device:
        return next(self.sampler.parameters()).device

    def judge(self, source: Path, purpose: str) -> Discriminator:
        """The discriminator, or a one-line error when `source` is a release, which has none."""
        if isinstance(self.model_config, DiffusionConfig):
            raise FedGANError(f"{source}: a diffusion model has no discriminator, which {purpose} needs")
        if self.discriminator is None:
            raise FedGANError(
                f"{source}: a release holds no discriminator, which {purpose} needs: use the run it came from"
            )
        return self.discriminator


def load_trained(path: Path, device: torch.device = torch.device("cpu")) -> TrainedModel:
    """The networks of the checkpoint at `path` (a run folder, its `latest`, a .pt file, or a release)."""
    release = read_release(path)
    data = release or read_checkpoint(path)
    config = model_from_record(data["model_config"])
    with torch.random.fork_rng(devices=[]):  # building initialises weights with the global RNG: leave it as it was
        if isinstance(config, DiffusionConfig):
            generator, discriminator = Denoiser(config), None
        else:
            generator, discriminator = build_models(config)
    generator.load_state_dict(data["generator"] if release else sampling_weights(data))
    if release:
        discriminator = None
    elif discriminator is not None:
        discriminator.load_state_dict(data["discriminator"])
        discriminator.requires_grad_(False).to(device).eval()
    completed = int(release["source"]["completed"]) if release else int(data["extra"].get("round", data["epoch"]))
    generator.requires_grad_(False).to(device).eval()  # for use only: no gradients are ever needed
    return TrainedModel(config, generator, discriminator, completed)
