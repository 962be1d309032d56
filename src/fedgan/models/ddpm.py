"""A grade-conditional denoising diffusion model built from diffusers' parts.

Why diffusers: its `UNet2DModel` and schedulers are the field's reference implementations (the
DDPM and DDIM papers' maths, tested by their maintainers), so we write only the glue. The UNet
uses GroupNorm throughout, which batch-independent training (and DP-SGD) needs.

A `Denoiser` is used exactly as a GAN's generator is: called on noise (and grades), it returns
images in [-1, 1]. The noise is a whole image's worth (`DiffusionConfig.latent_dim`), and DDIM
with eta 0 is deterministic, so the same noise gives the same image: fixed-noise grids stay
comparable from epoch to epoch, and evaluation, sampling and audits need no second code path.

Conditioning: grade g is class embedding g; embedding `num_classes` means "no grade". Training
hides the grade of `label_dropout` of the images, so one network is both the conditional and the
unconditional model that classifier-free guidance (Ho & Salimans 2022) mixes when sampling.

diffusers is imported where a denoiser is built (about 3 s), not with this module: GAN runs, and
every federated round's fresh hospital process, import this module without paying for it.
"""

from __future__ import annotations

import torch
from torch import nn

from fedgan.config import DiffusionConfig

#: attention head size at the UNet's lowest resolution (channel counts there are multiples of 8)
HEAD_DIM = 8


def unet_widths(config: DiffusionConfig) -> tuple[int, ...]:
    """Channels per level: doubled at each level down, capped at 4x the base width (DDPM's 1,2,2,2-like shape)."""
    return tuple(config.width * min(2**level, 4) for level in range(config.levels))


class Denoiser(nn.Module):
    """The UNet and its noise schedule: `loss` trains it, calling it samples from it."""

    def __init__(self, config: DiffusionConfig) -> None:
        from diffusers import DDPMScheduler, UNet2DModel

        super().__init__()
        self.config = config
        levels = config.levels
        self.unet = UNet2DModel(
            sample_size=config.resolution,
            in_channels=config.channels,
            out_channels=config.channels,
            block_out_channels=unet_widths(config),
            layers_per_block=config.layers_per_block,
            down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
            num_class_embeds=config.num_classes + 1 if config.conditional else None,
            norm_num_groups=8,
            attention_head_dim=HEAD_DIM,
        )
        self.schedule = DDPMScheduler(
            num_train_timesteps=config.timesteps,
            beta_schedule="squaredcos_cap_v2",
            prediction_type=config.prediction,
            clip_sample=True,
        )

    @property
    def no_grade(self) -> int:
        return self.config.num_classes

    def loss(self, images: torch.Tensor, labels: torch.Tensor | None, rng: torch.Generator) -> torch.Tensor:
        """The denoising loss on a batch: noise it to a random level, predict epsilon (or v), mean squared error.

        All randomness (levels, noise, hidden grades) comes from `rng`, so a resumed run draws
        exactly what the uninterrupted one would have."""
        count, device = images.shape[0], images.device
        noise = torch.randn(images.shape, generator=rng).to(device)
        steps = torch.randint(0, self.config.timesteps, (count,), generator=rng).to(device)
        hide = torch.rand(count, generator=rng).to(device) < self.config.label_dropout
        classes = None if labels is None else torch.where(hide, torch.full_like(labels, self.no_grade), labels)
        return self.errors(images, classes, steps, noise).mean()

    def errors(
        self, images: torch.Tensor, labels: torch.Tensor | None, steps: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Each image's squared error of the prediction at noise level `steps` with `noise`: the
        training loss, and what a white-box membership attack scores (members denoise better)."""
        noisy = self.schedule.add_noise(images, noise, steps)
        target = noise if self.config.prediction == "epsilon" else self.schedule.get_velocity(images, noise, steps)
        predicted = self.unet(noisy, steps, class_labels=labels).sample
        return (predicted.float() - target.float()).square().mean(dim=(1, 2, 3))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images from noise `z` (one image's worth per row) by deterministic DDIM, with guidance when asked."""
        from diffusers import DDIMScheduler

        config = self.config
        sample = z.reshape(len(z), config.channels, config.resolution, config.resolution)
        sampler = DDIMScheduler.from_config(self.schedule.config)
        sampler.set_timesteps(config.sample_steps, device=sample.device)
        guided = labels is not None and config.guidance != 1.0
        unconditioned = None if labels is None else torch.full_like(labels, self.no_grade)
        for step in sampler.timesteps:
            if guided:
                both = self.unet(torch.cat([sample, sample]), step, class_labels=torch.cat([labels, unconditioned]))
                conditional, unconditional = both.sample.chunk(2)
                predicted = unconditional + config.guidance * (conditional - unconditional)
            else:
                predicted = self.unet(sample, step, class_labels=labels).sample
            sample = sampler.step(predicted, step, sample, eta=0.0).prev_sample
        return sample.clamp(-1.0, 1.0)
