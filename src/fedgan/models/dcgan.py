"""A DCGAN for one-channel medical images, as in the paper, with resolution and widths configurable.

Paper shape at 128 px (`GANConfig()`):

    generator      z(200) -> dense 4x4x1024 -> 5 x [convT k4 s2, norm, ReLU] 512/256/128/64/32
                   -> conv k3 s1 -> 1 channel, tanh                                  (14.5 M params)
    discriminator  5 x [conv k4 s2, norm, LeakyReLU 0.2] 64/128/256/512/1024 -> dense(1)  (11.2 M)

Other resolutions add or remove one block per factor of two. The paper's last generator layer
is a stride-1 k4 transposed convolution with "same" padding (Keras); PyTorch cannot pad a k4
stride-1 layer symmetrically, so we use the equivalent k3 stride-1 convolution.

Class-conditional variant (`num_classes > 0`): the generator adds a learned per-grade vector to
its projected 4x4 features, which is exactly a one-hot grade concatenated to z, but leaves the
projection's shape unchanged, so an unconditional (e.g. CT-pretrained) checkpoint still loads.
With `grade_norm` it also shifts the gain and bias of every upsampling block's normalised
features per grade (conditional batch norm, de Vries et al. 2017, as in the generator of Miyato &
Koyama 2018): a grade then reaches every scale, where lesions are drawn, not only the 4x4 layout.
The discriminator is a projection discriminator (Miyato & Koyama 2018), adding
<embed(grade), features> to its logit. Both networks therefore take the grade as input. With
`grade_head` the discriminator also classifies every image's grade from the same features
(the auxiliary classifier of AC-GAN, Odena et al. 2017): the loop trains it on real images and
asks the generator for images it classifies as their grade, a signal aimed at what tells grades
apart, which the projection term only carries mixed into realism. With `twin_head` a second
classifier learns the grades of *generated* images (TAC-GAN, Gong et al. 2019), and the generator
minimises the first head's cross-entropy while maximising the twin's: that cancels the part of
the first head's reward that comes from generated images being easy to classify, which is
AC-GAN's pull toward caricatures (grainy, blotched samples on our data; docs/recipe.md).

Normalisation is a choice because federation (BatchNorm statistics under FedAvg), secure
aggregation (integer buffers) and differential privacy (Opacus rejects BatchNorm) constrain it:
batch (default, as the paper), group, or none. Activations are never in-place (Opacus hooks).

Two options come from the small-data GAN literature (see `fedgan.training.recipes`):
- `spectral_norm`: every discriminator layer is spectrally normalised (Miyato et al. 2018) and
  the discriminator has no normalisation layers. Bounding D's Lipschitz constant is what keeps
  a discriminator from winning outright on a few hundred images; batch statistics in D would
  also let it tell a real batch from a fake one by its statistics alone.
- `upsample = "resize"`: nearest-neighbour upsampling then a 3x3 convolution instead of a
  stride-2 transposed convolution, whose uneven kernel overlap draws checkerboards (Odena et
  al. 2016).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedgan.config import GANConfig


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels, eps=1e-3)  # the paper's Keras epsilon
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-3)
    return nn.Identity()


def glorot_init(module: nn.Module) -> None:
    """Keras's default (Glorot-uniform weights, zero biases), which the paper's models used."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.xavier_uniform_(module.weight)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def upsampling(kind: str, channels: int, out_channels: int, *, bias: bool) -> list[nn.Module]:
    """Layers that double height and width: (channels, s, s) -> (out_channels, 2s, 2s)."""
    if kind == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, out_channels, 3, padding=1, bias=bias)]
    return [nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1, bias=bias)]


class GradeAffine(nn.Module):
    """Per-grade gain and bias on normalised features, x * (1 + gain[grade]) + bias[grade].

    Both start at zero, so a new conditional generator starts as its unconditional twin, and an
    unconditional checkpoint (CT pretraining) loads without these and loses nothing."""

    def __init__(self, grades: int, channels: int) -> None:
        super().__init__()
        self.gain = nn.Embedding(grades, channels)
        self.bias = nn.Embedding(grades, channels)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.gain(labels)[:, :, None, None]) + self.bias(labels)[:, :, None, None]


#: Both networks keep their convolution weights, and so their activations, channels-last (NHWC):
#: oneDNN's CPU convolutions and CUDA's tensor cores run natively in that layout, and NCHW costs a
#: reorder around every layer. `python benchmarks/train_throughput.py --layouts` measures a step of
#: the demo's model (64 px, batch 16) at 0.82-0.92x the time of NCHW on 2 CPU cores (three runs), and of the
#: paper's 128 px networks at 0.95-0.96x. Outputs and checkpoints are the same tensors either way (a layout is not
#: part of a state dict's values), so NCHW checkpoints load unchanged.
CHANNELS_LAST = torch.channels_last


class Generator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        width = config.generator_width
        self.project = nn.Linear(
            config.latent_dim, width * 4 * 4, bias=False
        )  # (N, width*16) -> reshaped to width x 4 x 4
        self.embed = nn.Embedding(config.num_classes, width * 4 * 4) if config.conditional else None  # per-grade offset
        self.project_norm = norm_layer(config.norm, width)
        layers: list[nn.Module] = []
        normed: list[tuple[int, int]] = []  # (index in `upsample`, channels) of each block's norm layer
        for _ in range(config.blocks):  # each: (c, s, s) -> (c/2, 2s, 2s)
            layers += upsampling(config.upsample, width, width // 2, bias=config.norm == "none")
            normed.append((len(layers), width // 2))
            layers += [norm_layer(config.norm, width // 2), nn.ReLU()]
            width //= 2
        self.upsample = nn.Sequential(*layers)  # (generator_width >> blocks) x resolution x resolution
        self.to_image = nn.Conv2d(width, config.channels, 3, padding=1)  # channels x resolution x resolution
        self.apply(glorot_init)
        self.grade_norms = (
            nn.ModuleDict({str(i): GradeAffine(config.num_classes, channels) for i, channels in normed})
            if config.conditional and config.grade_norm
            else None
        )  # keyed by the index of the norm layer each follows
        self.to(memory_format=CHANNELS_LAST)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.project(z)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional generator needs the grade of each sample")
            x = x + self.embed(labels)
        x = x.view(-1, self.config.generator_width, 4, 4)
        x = torch.relu(self.project_norm(x))
        if self.grade_norms is None:
            return torch.tanh(self.to_image(self.upsample(x)))  # values in [-1, 1], like the store
        for i, layer in enumerate(self.upsample):
            x = layer(x)
            if str(i) in self.grade_norms:
                x = self.grade_norms[str(i)](x, labels)
        return torch.tanh(self.to_image(x))


class Discriminator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels, width = config.channels, config.discriminator_width
        norm = "none" if config.spectral_norm else config.norm
        for _ in range(config.blocks):  # each: (c, s, s) -> (2c, s/2, s/2)
            layers += [
                nn.Conv2d(channels, width, 4, stride=2, padding=1, bias=norm == "none"),
                norm_layer(norm, width),
                nn.LeakyReLU(0.2),
            ]
            channels, width = width, width * 2
        self.features = nn.Sequential(*layers, nn.Flatten())  # (N, channels * 4 * 4)
        self.feature_dim = channels * 4 * 4
        self.logit = nn.Linear(self.feature_dim, 1)
        self.embed = nn.Embedding(config.num_classes, self.feature_dim) if config.conditional else None
        self.grade_head = nn.Linear(self.feature_dim, config.num_classes) if config.has_grade_head else None
        self.twin_head = nn.Linear(self.feature_dim, config.num_classes) if config.has_twin_head else None
        self.apply(glorot_init)
        if config.spectral_norm:  # after init: the parametrisation keeps the initialised weight as its `original`
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    nn.utils.parametrizations.spectral_norm(module)
        self.to(memory_format=CHANNELS_LAST)

    @property
    def batch_coupled(self) -> bool:
        """Whether an image's logit depends on the other images of its pass (batch norm in training)."""
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules())

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Real/fake logits of shape (N,)."""
        return self.realness(self.features(images), labels)

    def logits_and_grades(
        self, images: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Real/fake logits (N,) and the grade head's and twin head's grade logits (N, grades),
        each None without its head, from one pass. `forward` leaves the heads out: under DP-SGD a
        layer run whose output takes no gradient would leave Opacus without its per-sample
        gradient (which is also why DP-SGD refuses a twin head: it is run on real images too)."""
        h = self.features(images)
        return (
            self.realness(h, labels),
            None if self.grade_head is None else self.grade_head(h),
            None if self.twin_head is None else self.twin_head(h),
        )

    def realness(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        out = self.logit(h).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional discriminator needs the grade of each sample")
            out = out + (self.embed(labels) * h).sum(dim=1)  # projection term
        return out


def build_models(config: GANConfig) -> tuple[Generator, Discriminator]:
    return Generator(config), Discriminator(config)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
