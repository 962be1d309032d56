"""The generator at the server, a discriminator at each hospital (MD-GAN, Hardy et al. 2019).

Torch only: the federation (`fedgan.federation.split_server`, `split_client`) moves these
tensors between processes. One generator step of the split is the centralised step
(`fedgan.training.loop.train_step`) cut in two:

- the server draws z and grades and makes fakes with G (`draw_fakes`);
- each hospital (`Judge.judge`) augments its real batch and the fakes of the grades it holds,
  takes one D step, and returns d(G loss)/d(fake) through the augmentation. Its D and its
  images never leave it;
- the server weights the hospitals' gradients grade by grade (`combine`: a grade held by one
  hospital is judged by that hospital alone, as UA-GAN's per-grade weighting) and backpropagates
  them through G (`generator_step`).

With one hospital holding every image and one step per exchange, this is the centralised step
(tested). Several steps travel in one exchange (`pack`): their fakes are made by G at the start
of the exchange, and each later G step applies its gradient to a fresh forward pass of the same
z, a delay of at most pack - 1 steps, as MD-GAN's k batches per iteration. The first step reuses
the forward pass that made its images (G has not changed since), one G forward fewer an exchange.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from torch import nn

from fedgan.config import TrainConfig
from fedgan.training.augment import diff_augment, mirror, parse_policy
from fedgan.training.data import epoch_order
from fedgan.training.device import autocast
from fedgan.training.loop import DiscriminatorSide, GANState, StepStats, generator_loss, noise_and_grades


@contextlib.contextmanager
def frozen_batch_statistics(module: nn.Module) -> Iterator[None]:
    """Batch norm normalises with batch statistics but leaves its running ones alone: the fakes
    of an exchange are made once and made again in each G step, and only the G step's forward
    pass may count, as in the centralised loop's single forward pass."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


@dataclasses.dataclass
class Draw:
    """One generator step's noise, grades and images. `graph` is the forward pass that made the
    images, kept when no G step comes between the draw and its own step (an exchange's first
    draw): that step then backpropagates through it instead of running G a second time."""

    z: torch.Tensor
    labels: torch.Tensor | None
    fakes: torch.Tensor
    graph: torch.Tensor | None = None
    at_step: int = -1


def draw_fakes(state: GANState, count: int, grade_counts: torch.Tensor | None, *, own_step: bool = False) -> Draw:
    """z, grades (drawn in proportion to the hospitals' pooled images per grade) and G's images of them.

    `own_step`: this forward pass is the one the next G step counts (batch statistics and all), so
    it keeps its graph; only the next G step may use it, since any other step changes G first."""
    labels = None
    if state.model_config.conditional and grade_counts is not None:
        labels = torch.multinomial(grade_counts.double(), count, replacement=True, generator=state.noise).to(
            state.device
        )
    z, labels = noise_and_grades(state, count, labels)
    state.generator.train()
    if own_step:
        with autocast(state.device):
            images = state.generator(z, labels)
        return Draw(z, labels, images.detach().float(), images, state.step)
    with torch.no_grad(), frozen_batch_statistics(state.generator), autocast(state.device):
        fakes = state.generator(z, labels).float()
    return Draw(z, labels, fakes)


def generator_step(state: GANState, draw: Draw, gradient: torch.Tensor) -> None:
    """One G update from the gradient of the loss with respect to G's images of the draw's (z, labels)."""
    state.generator.train()
    if draw.graph is not None:
        if draw.at_step != state.step:
            raise RuntimeError(f"a draw made at G step {draw.at_step} cannot serve step {state.step}: G has changed")
        images, draw.graph = draw.graph, None
    else:
        with autocast(state.device):
            images = state.generator(draw.z, draw.labels)
    state.opt_generator.zero_grad(set_to_none=True)
    images.float().backward(gradient.to(state.device))
    state.opt_generator.step()
    if state.generator_ema is not None:
        state.generator_ema.update_parameters(state.generator)
    state.step += 1


def combine(
    count: int, answers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], shape: tuple[int, ...]
) -> torch.Tensor:
    """The batch's loss gradient from the hospitals' answers.

    Each answer is (indices into the batch, weight per index, gradient per index), the
    gradient of that hospital's mean loss over the images it judged. The weights of one image
    sum to 1 over its judges; scaling by judged/count turns each mean back into the batch mean
    that the centralised loss takes.
    """
    total = torch.zeros((count, *shape))
    for index, weight, gradient in answers:
        total.index_add_(0, index, gradient * (weight * len(index) / count).view(-1, *([1] * len(shape))))
    return total


def grade_weights(holdings: dict[int, list[int]], grades: int) -> dict[int, torch.Tensor]:
    """Per hospital, its share of each grade's images among the hospitals answering:
    {hospital: weights[grade]}, 0 where it holds none of that grade."""
    counts = torch.tensor([holdings[h] for h in holdings], dtype=torch.float64).view(len(holdings), grades)
    totals = counts.sum(0).clamp(min=1)
    return {h: (counts[i] / totals).float() for i, h in enumerate(holdings)}


def one_judge_each(
    holdings: dict[int, list[int]], labels: torch.Tensor | None, count: int, generator: torch.Generator
) -> dict[int, torch.Tensor]:
    """For each image of a batch, the one hospital that judges it: {hospital: indices}.

    Drawn with probability its share of the image's grade (of all images, unconditionally), so the
    expected gradient is `grade_weights`' mix of every holder's, while each image costs one
    discriminator step instead of one per holder: under label-split over ten hospitals every grade
    has two holders, and judging is most of a round's time on one machine. An image of a grade no
    hospital holds is judged by none (as under "all")."""
    hospitals = list(holdings)
    table = torch.tensor([holdings[h] for h in hospitals], dtype=torch.float64)  # (hospitals, grades)
    odds = table.sum(1, keepdim=True).expand(-1, count) if labels is None else table[:, labels.cpu()]
    unheld = odds.sum(0) == 0
    judge = torch.multinomial(odds.T.masked_fill(unheld[:, None], 1.0), 1, generator=generator).squeeze(1)
    judge[unheld] = -1
    return {h: torch.nonzero(judge == i).flatten() for i, h in enumerate(hospitals)}


@dataclasses.dataclass
class Judge:
    """A hospital's side of the split: its discriminator, optimiser, augmentation stream and
    position in its own data (epoch, cursor), all of which a checkpoint keeps."""

    side: DiscriminatorSide
    images: torch.Tensor
    labels: torch.Tensor
    config: TrainConfig
    augment: torch.Generator
    conditional: bool
    epoch: int = 0
    cursor: int = 0
    steps: int = 0
    grade_cursor: dict[int, int] = dataclasses.field(
        default_factory=dict
    )  # conditional: images drawn so far, per grade

    def real_batch(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next `count` images in this hospital's epoch order (the centralised loop's order);
        an epoch's tail shorter than the batch is skipped, as the centralised loop drops it."""
        count = min(count, len(self.images))
        if self.cursor + count > len(self.images):
            self.epoch, self.cursor = self.epoch + 1, 0
        index = epoch_order(len(self.images), self.config.seed, self.epoch)[self.cursor : self.cursor + count]
        self.cursor += count
        return self.images[index], self.labels[index]

    def real_of_grades(self, grades: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One real image of each requested grade, each grade's images in their own epoch order:
        the discriminator then compares real and fake batches of the same grades, as in the
        centralised loop, where the fakes take the real batch's grades."""
        chosen = torch.empty(len(grades), dtype=torch.long)
        for grade in grades.unique().tolist():
            members = torch.nonzero(self.labels == grade).flatten()
            if len(members) == 0:
                raise ValueError(f"asked to judge grade {grade}, which this hospital does not hold")
            slots = torch.nonzero(grades == grade).flatten()
            start = self.grade_cursor.get(grade, 0)
            positions = torch.arange(start, start + len(slots))
            orders = {
                e: epoch_order(len(members), self.config.seed * 10 + grade, e)
                for e in (positions // len(members)).unique().tolist()
            }
            chosen[slots] = torch.stack(
                [members[orders[int(q) // len(members)][int(q) % len(members)]] for q in positions]
            )
            self.grade_cursor[grade] = start + len(slots)
        return self.images[chosen], self.labels[chosen]

    def judge(self, fakes: torch.Tensor, fake_labels: torch.Tensor | None) -> tuple[torch.Tensor, StepStats]:
        """One D step against these fakes, then d(G loss)/d(fakes) through the updated D."""
        device = next(self.side.discriminator.parameters()).device
        policy = parse_policy(self.config.augment)
        chosen = (
            self.real_of_grades(fake_labels)
            if self.conditional and fake_labels is not None
            else self.real_batch(len(fakes))
        )
        real, real_labels = (t.to(device) for t in chosen)
        if self.config.mirror:
            real = mirror(real, self.augment)
        fakes = fakes.to(device).requires_grad_(True)
        fake_labels = fake_labels.to(device) if self.conditional and fake_labels is not None else None
        fake_seen = diff_augment(fakes, policy, self.augment)
        real_seen = diff_augment(real, policy, self.augment)
        regularise = self.config.r1_gamma > 0 and self.steps % self.config.r1_every == 0
        self.side.discriminator.train()
        d_loss, real_logits, fake_logits = self.side.update(
            real_seen, real_labels if self.conditional else None, fake_seen, fake_labels, self.config, regularise
        )
        with self.side.judged(), autocast(device):
            g_loss = generator_loss(self.side.discriminator, fake_seen, fake_labels, self.config)
        (gradient,) = torch.autograd.grad(g_loss, fakes)
        self.steps += 1
        return gradient.detach().cpu(), StepStats.of(d_loss, g_loss, real_logits, fake_logits)
