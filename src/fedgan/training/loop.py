"""The one local training loop: centralised training, CT pretraining and every federated hospital.

A `GANState` holds everything that changes during training (both networks, both optimisers,
the generator's moving average, counters, the noise and augmentation generators), so that a
checkpoint of it resumes bit for bit. Data order comes from (seed, epoch), noise and
augmentation from generators stored in the state, never from global RNG.

What one GAN step does is set by the `TrainConfig` (see `fedgan.training.recipes` for the
named recipes): the loss (hinge or the paper's BCE), DiffAugment of real and fake images in
both updates, a lazy R1 penalty, the grade head's classification loss, and the EMA of the generator.

`train_epoch` runs any `TrainingState`: a DDPM's (`fedgan.training.diffusion`) steps by its own
`train_step` through the same epochs, batches and callbacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from fedgan.config import GANConfig, ModelConfig, TrainConfig
from fedgan.models.dcgan import Discriminator, Generator, build_models
from fedgan.training.augment import augment_generator, diff_augment, mirror, parse_policy
from fedgan.training.data import EpochData
from fedgan.training.device import autocast


class Privacy(Protocol):
    """DP-SGD on a discriminator, or a DDPM's denoiser (`fedgan.training.privacy.PrivateNetwork`).

    Its optimiser replaces the discriminator's and advances the accountant on every step, so a
    discriminator update is the same code with or without DP. What remains for the loop is to
    switch the per-sample hooks off while the generator learns through D."""

    noise: float
    rate: float

    def hooks_off(self) -> contextlib.AbstractContextManager[None]: ...

    def history(self) -> list[tuple[float, float, int]]: ...

    def epsilon(self) -> float: ...

    def close(self) -> None: ...


@dataclasses.dataclass
class GANState:
    model_config: GANConfig
    generator: Generator
    discriminator: Discriminator
    opt_generator: torch.optim.Optimizer
    opt_discriminator: torch.optim.Optimizer  # Opacus's DPOptimizer around Adam under DP-SGD
    noise: torch.Generator  # draws every z and fake label, so resumed runs draw the same ones
    epoch: int = 0  # completed epochs of this state's own training (a federation's progress is its round)
    step: int = 0  # completed generator updates
    private: Privacy | None = None  # DP-SGD on the discriminator, when enabled
    generator_ema: AveragedModel | None = None  # moving average of the generator's weights, when enabled
    augment: torch.Generator = dataclasses.field(default_factory=lambda: augment_generator(0))  # DiffAugment's draws

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def sampler(self) -> Generator:
        """The generator that makes published images: the moving average when there is one."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator  # type: ignore[return-value]

    def networks(self) -> dict[str, nn.Module]:
        """The trained networks by the names checkpoints and federation messages give them."""
        return {"generator": self.generator, "discriminator": self.discriminator}

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_generator": self.opt_generator, "opt_discriminator": self.opt_discriminator}

    def restart(self, config: TrainConfig) -> None:
        """Fresh optimisers and a moving average that starts at the current weights (transfer learning)."""
        self.opt_generator, self.opt_discriminator = make_optimisers(self.generator, self.discriminator, config)
        self.generator_ema = make_ema(self.generator, config)

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None, config: TrainConfig) -> StepStats:
        return train_step(self, real, labels, config)


class TrainingState(Protocol):
    """What every training state offers (a GAN's `GANState`, a DDPM's `training.diffusion.DiffusionState`):
    the local loop, checkpoints and the federation use only this."""

    model_config: ModelConfig
    noise: torch.Generator
    augment: torch.Generator
    epoch: int
    step: int
    private: Privacy | None
    generator_ema: AveragedModel | None

    @property
    def device(self) -> torch.device: ...

    @property
    def sampler(self) -> nn.Module: ...

    def networks(self) -> dict[str, nn.Module]: ...

    def optimisers(self) -> dict[str, torch.optim.Optimizer]: ...

    def restart(self, config: TrainConfig) -> None: ...

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None, config: TrainConfig) -> StepStats: ...


def ema_average(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """`AveragedModel`'s averaging function: an EMA whose decay ramps up as min(decay, (1+n)/(10+n))
    over the first updates (n = updates so far), so early samples are not dominated by the
    random initial weights. Integer buffers (batch-norm counters) take the newest value."""

    def average(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current
        rate = min(decay, (1.0 + float(updates)) / (10.0 + float(updates)))
        return averaged + (current - averaged) * (1.0 - rate)

    return average


def make_ema(generator: nn.Module, config: TrainConfig) -> AveragedModel | None:
    """A fresh moving average that starts at `generator`'s current weights (and buffers)."""
    if config.ema_decay <= 0:
        return None
    return AveragedModel(generator, avg_fn=ema_average(config.ema_decay), use_buffers=True)


def make_optimisers(
    generator: Generator, discriminator: Discriminator, config: TrainConfig
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    betas = (config.beta1, config.beta2)
    return (
        torch.optim.Adam(generator.parameters(), lr=config.lr_generator, betas=betas),
        torch.optim.Adam(discriminator.parameters(), lr=config.lr_discriminator, betas=betas),
    )


def new_state(model_config: GANConfig, train_config: TrainConfig, device: torch.device) -> GANState:
    """Fresh networks whose initial weights depend only on the seed."""
    torch.manual_seed(train_config.seed)
    generator, discriminator = (m.to(device) for m in build_models(model_config))
    opt_g, opt_d = make_optimisers(generator, discriminator, train_config)
    parse_policy(train_config.augment)  # an unknown augmentation fails here, before any work
    return GANState(
        model_config,
        generator,
        discriminator,
        opt_g,
        opt_d,
        noise_generator(train_config.seed),
        generator_ema=make_ema(generator, train_config),
        augment=augment_generator(train_config.seed),
    )


def noise_generator(seed: int) -> torch.Generator:
    """The generator of all z and fake grades of a run (or of one hospital's round)."""
    return torch.Generator(device="cpu").manual_seed(seed + 1)


@dataclasses.dataclass(frozen=True)
class StepStats:
    """One step's losses. A DDPM has no discriminator: its denoising loss is its `g_loss` (the loss
    of the network that makes the images) and its D fields are 0."""

    d_loss: float
    g_loss: float
    d_real: float  # mean D(x) on real images (probability)
    d_fake: float  # mean D(G(z)) before the generator update

    def finite(self) -> bool:
        return bool(np.isfinite([self.d_loss, self.g_loss]).all())

    @classmethod
    def of(
        cls, d_loss: torch.Tensor, g_loss: torch.Tensor, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> StepStats:
        stats = torch.stack(
            [
                d_loss.detach(),
                g_loss.detach(),
                torch.sigmoid(real_logits.detach().float()).mean(),
                torch.sigmoid(fake_logits.detach().float()).mean(),
            ]
        )
        return cls(*stats.tolist())  # one device sync per step


def noise_and_grades(
    state: GANState, count: int, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Noise and, for a conditional model, grades: the real batch's grades, or uniform ones."""
    z = torch.randn(count, state.model_config.latent_dim, generator=state.noise).to(state.device)
    if not state.model_config.conditional:
        return z, None
    if labels is None:
        labels = torch.randint(0, state.model_config.num_classes, (count,), generator=state.noise).to(state.device)
    return z, labels


def d_loss_terms(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's loss on real and on fake logits."""
    if config.loss == "hinge":
        return F.relu(1.0 - real_logits.float()).mean(), F.relu(1.0 + fake_logits.float()).mean()
    return (
        F.binary_cross_entropy_with_logits(
            real_logits.float(), torch.full_like(real_logits, config.real_label, dtype=torch.float32)
        ),
        F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32)),
    )


def g_loss_term(logits: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The generator's loss on the discriminator's logits of its images."""
    if config.loss == "hinge":
        return -logits.float().mean()
    return F.binary_cross_entropy_with_logits(
        logits.float(), torch.ones_like(logits, dtype=torch.float32)
    )  # non-saturating


def grade_term(grade_logits: torch.Tensor | None, labels: torch.Tensor | None, weight: float) -> torch.Tensor | float:
    """The grade head's weighted cross-entropy (AC-GAN), or 0 without a head."""
    if grade_logits is None or labels is None:
        return 0.0
    return weight * F.cross_entropy(grade_logits.float(), labels)


def generator_loss(
    discriminator: Discriminator, fake_seen: torch.Tensor, labels: torch.Tensor | None, config: TrainConfig
) -> torch.Tensor:
    """The generator's loss through `discriminator`: fool it and, with a grade head, be classified
    as the grade asked for, weighed apart from the head's own training (`generator_grade_weight`):
    pushed as hard as D's head learns, G draws grades as caricatures a classifier reads at once
    (grainy, blotched images; docs/recipe.md, "The grade head's two weights")."""
    logits, grade_logits, twin_logits = discriminator.logits_and_grades(fake_seen, labels)
    return (
        g_loss_term(logits, config)
        + grade_term(grade_logits, labels, config.generator_grade_weight)
        - grade_term(twin_logits, labels, config.generator_grade_weight)
    )


def r1_penalty(
    discriminator: Discriminator, real: torch.Tensor, labels: torch.Tensor | None, config: TrainConfig
) -> torch.Tensor:
    """Lazy R1 (Mescheder et al. 2018): gamma/2 E|grad_x D(x)|^2 on real images, scaled by the
    interval so that its average strength does not depend on how often it runs."""
    real = real.detach().requires_grad_(True)
    logits = discriminator(real, labels)
    (gradient,) = torch.autograd.grad(logits.float().sum(), real, create_graph=True)
    return gradient.square().sum(dim=(1, 2, 3)).mean() * (config.r1_gamma / 2 * config.r1_every)


@dataclasses.dataclass
class DiscriminatorSide:
    """What a discriminator update needs: the network, its optimiser (DP-SGD's when on) and the
    privacy hooks. The centralised loop takes it from its `GANState`; under `mdgan` a hospital
    holds only this."""

    discriminator: Discriminator
    optimiser: torch.optim.Optimizer
    private: Privacy | None = None

    def update(
        self,
        real_seen: torch.Tensor,
        real_labels: torch.Tensor | None,
        fake_seen: torch.Tensor,
        fake_labels: torch.Tensor | None,
        config: TrainConfig,
        regularise: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One D step on augmented real and (detached) fake images; its loss and both logits.

        Real and fake images go through D in one pass where nothing couples the images of a
        batch: spectral norm's power iteration then runs once a step instead of twice, and each
        layer is launched once. At the handful of images an `mdgan` hospital judges, that fixed
        cost is most of the step (`benchmarks/judge_cost.py`). Batch norm (the paper's D) would
        normalise the two sets together, and Opacus counts each pass's samples, so both keep two."""
        with autocast(real_seen.device):
            if self.private is None and not self.discriminator.batch_coupled:
                both = torch.cat([real_seen, fake_seen.detach()])
                labels = None if real_labels is None else torch.cat([real_labels, fake_labels])
                logits, grades, twins = self.discriminator.logits_and_grades(both, labels)
                real_logits, fake_logits = logits.split([len(real_seen), len(fake_seen)])
                real_grades = None if grades is None else grades[: len(real_seen)]
                fake_twins = None if twins is None else twins[len(real_seen) :]
            else:
                real_logits, real_grades, _ = self.discriminator.logits_and_grades(real_seen, real_labels)
                if self.discriminator.twin_head is None:
                    fake_logits, fake_twins = self.discriminator(fake_seen.detach(), fake_labels), None
                else:  # batch norm without DP-SGD: DP refuses a twin head (`privacy.check_private_model`)
                    fake_logits, _, fake_twins = self.discriminator.logits_and_grades(fake_seen.detach(), fake_labels)
            d_loss_real, d_loss_fake = d_loss_terms(real_logits, fake_logits, config)
            d_loss = (
                d_loss_real
                + d_loss_fake
                + grade_term(real_grades, real_labels, config.grade_weight)  # the head learns real grades
                + grade_term(fake_twins, fake_labels, config.grade_weight)  # its twin the generated ones'
            )
        self.optimiser.zero_grad(set_to_none=True)
        (d_loss + r1_penalty(self.discriminator, real_seen, real_labels, config) if regularise else d_loss).backward()
        self.optimiser.step()  # under DP-SGD: clip per sample, add noise, count the step
        return d_loss, real_logits, fake_logits

    def judged(self) -> contextlib.AbstractContextManager[None]:
        """The generator's update through this D: no per-sample gradients, no privacy step."""
        return self.private.hooks_off() if self.private else contextlib.nullcontext()


def train_step(state: GANState, real: torch.Tensor, labels: torch.Tensor | None, config: TrainConfig) -> StepStats:
    """`d_steps` discriminator updates, then one generator update.

    The generator's last batch of fakes (augmented once) serves both the final D update
    (detached) and the G update, as in DCGAN: one generator forward pass per step instead of two.
    With augmentation on, D only ever sees augmented images, real and fake alike, and G is
    trained through the same differentiable transforms.
    """
    batch = real.shape[0]
    cond = labels if state.model_config.conditional else None
    device = state.device
    policy = parse_policy(config.augment)
    if config.mirror:
        real = mirror(real, state.augment)
    side = DiscriminatorSide(state.discriminator, state.opt_discriminator, state.private)
    for d_step in range(config.d_steps):
        # update D: minimise its loss on augment(x) and augment(G(z))
        z, fake_labels = noise_and_grades(state, batch, cond)
        keep_graph = d_step == config.d_steps - 1
        with autocast(device), torch.set_grad_enabled(keep_graph):
            fake = diff_augment(state.generator(z, fake_labels), policy, state.augment)
        real_seen = diff_augment(real, policy, state.augment)
        regularise = config.r1_gamma > 0 and (state.step * config.d_steps + d_step) % config.r1_every == 0
        d_loss, real_logits, fake_logits = side.update(real_seen, cond, fake, fake_labels, config, regularise)
    # update G: minimise its loss on D(augment(G(z))), on the same fakes
    with side.judged():
        with autocast(device):
            g_loss = generator_loss(state.discriminator, fake, fake_labels, config)
        state.opt_generator.zero_grad(set_to_none=True)
        g_loss.backward()
    state.opt_generator.step()
    if state.generator_ema is not None:
        state.generator_ema.update_parameters(state.generator)
    state.step += 1
    return StepStats.of(d_loss, g_loss, real_logits, fake_logits)


OnStep = Callable[[TrainingState, StepStats, int], None]


def train_epoch(
    state: TrainingState, data: EpochData, config: TrainConfig, on_step: OnStep | None = None
) -> list[StepStats]:
    """One pass over `data` (`fedgan.training.data`: held in memory or streamed) in full batches.

    The last partial batch is dropped, as batch norm statistics of a handful of images are
    noise. `on_step(state, stats, batch_size)` is called after every step (metrics, progress).
    """
    expected = (state.model_config.channels, state.model_config.resolution, state.model_config.resolution)
    if tuple(data.image_shape) != expected:
        raise ValueError(f"images are {tuple(data.image_shape)} but the model is built for {expected}")
    for network in state.networks().values():
        network.train()
    history = []
    for images, grades in data.batches(config.seed, state.epoch, config.batch_size, config.balance_grades):
        real = images.to(state.device, non_blocking=True)
        stats = state.train_step(real, grades.to(state.device, non_blocking=True), config)
        history.append(stats)
        if on_step is not None:
            on_step(state, stats, len(real))
    state.epoch += 1
    return history


class Sampling(Protocol):
    """What `generate` needs: a training state, or a model loaded for use (`training.trained`)."""

    model_config: ModelConfig

    @property
    def sampler(self) -> nn.Module: ...

    @property
    def device(self) -> torch.device: ...


@torch.no_grad()
def generate(
    state: Sampling, z: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256
) -> torch.Tensor:
    """Images from given noise with the sampling generator (the EMA when there is one) in eval
    mode (running statistics, no updates), without gradients."""
    generator = state.sampler
    was_training = generator.training
    generator.eval()
    out = [
        generator(
            z[i : i + batch_size].to(state.device),
            None if labels is None else labels[i : i + batch_size].to(state.device),
        )
        .float()
        .cpu()
        for i in range(0, len(z), batch_size)
    ]
    generator.train(was_training)
    return torch.cat(out)


class Throughput:
    """Images per second over a run, for progress bars and metrics."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.images = 0

    def add(self, count: int) -> float:
        self.images += count
        return self.images / max(time.perf_counter() - self.started, 1e-9)
