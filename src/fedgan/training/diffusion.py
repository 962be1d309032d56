"""A DDPM's training state and step, run by the same local loop as the GAN (`loop.train_epoch`).

Centralised training, CT pretraining and every federated hospital call `train_epoch` on a
state; a `DiffusionState` steps by plain regression (`Denoiser.loss`), so there is no adversary,
no augmentation of what the model must reproduce (a diffusion model would learn the augmented
distribution), only the distribution-preserving mirror. Like `GANState`, every random draw comes
from generators kept in the state, so a checkpoint resumes bit for bit.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from fedgan.config import DiffusionConfig, TrainConfig
from fedgan.models.ddpm import Denoiser
from fedgan.training.augment import augment_generator, mirror
from fedgan.training.device import autocast
from fedgan.training.loop import Privacy, StepStats, make_ema, noise_generator


def make_optimiser(denoiser: Denoiser, config: TrainConfig) -> torch.optim.Adam:
    """Adam at the generator's learning rate (the DDPM recipe sets it, see `training.recipes`)."""
    return torch.optim.Adam(denoiser.parameters(), lr=config.lr_generator, betas=(config.beta1, config.beta2))


@dataclasses.dataclass
class DiffusionState:
    model_config: DiffusionConfig
    denoiser: Denoiser
    optimiser: torch.optim.Optimizer
    noise: torch.Generator  # noise levels, noise and hidden grades of every step
    epoch: int = 0
    step: int = 0
    private: Privacy | None = None
    generator_ema: AveragedModel | None = None  # moving average of the denoiser: what samples
    augment: torch.Generator = dataclasses.field(default_factory=lambda: augment_generator(0))  # the mirror's draws

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def sampler(self) -> nn.Module:
        return self.generator_ema.module if self.generator_ema is not None else self.denoiser

    def networks(self) -> dict[str, nn.Module]:
        return {"denoiser": self.denoiser}

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_denoiser": self.optimiser}

    def restart(self, config: TrainConfig) -> None:
        self.optimiser = make_optimiser(self.denoiser, config)
        self.generator_ema = make_ema(self.denoiser, config)

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None, config: TrainConfig) -> StepStats:
        """One denoising update on a batch (mirrored as the GAN's real images are)."""
        if config.mirror:
            real = mirror(real, self.augment)
        with autocast(real.device):
            loss = self.denoiser.loss(real, labels if self.model_config.conditional else None, self.noise)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.denoiser)
        self.step += 1
        return StepStats(0.0, float(loss.detach()), 0.0, 0.0)


def state_around(denoiser: Denoiser, config: DiffusionConfig, train_config: TrainConfig) -> DiffusionState:
    """A training state for an existing denoiser (a hospital's, built once per process): a fresh
    optimiser and moving average, and the noise and mirror streams of `train_config.seed`."""
    return DiffusionState(
        config,
        denoiser,
        make_optimiser(denoiser, train_config),
        noise_generator(train_config.seed),
        generator_ema=make_ema(denoiser, train_config),
        augment=augment_generator(train_config.seed),
    )


def new_diffusion_state(config: DiffusionConfig, train_config: TrainConfig, device: torch.device) -> DiffusionState:
    """A fresh denoiser whose initial weights depend only on the seed."""
    torch.manual_seed(train_config.seed)
    return state_around(Denoiser(config).to(device), config, train_config)
