"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for small-data GAN training.

With a few hundred images a discriminator memorises the training set within minutes, and the
generator then gets no useful gradient. DiffAugment applies the same family of random
transforms to real *and* generated images, in both the D and the G update; because every
transform is differentiable, G is still trained through them, and because both sides are
augmented, G is not pushed to *produce* augmented images. The transforms follow the reference
`DiffAugment_pytorch.py` of mit-han-lab/data-efficient-gans:

- `translation`: integer shifts of up to 1/8 of the size, padding with black (the fundus
  background, -1 here) rather than the reference's zero, which is mid-grey in [-1, 1];
- `cutout`: one square of half the size set to 0, as in the reference;
- `color`: brightness and contrast (saturation has no meaning for one channel).

Horizontal flips are *not* a DiffAugment transform here, although the reference has one: a flip
applied to real and generated images alike makes the discriminator blind to laterality, and the
generator then draws every eye with its disc on the same side (measured: all 50 samples of a
4-minute run). Mirroring only the real images (`mirror`, as StyleGAN's `--mirror`) is what is
safe for fundus: a mirrored left eye is a right eye, so the data doubles without changing its
distribution, and the generator must still draw both.

Why our own few lines rather than kornia: every random draw here comes from a `torch.Generator`
that the training state owns and checkpoints, so a resumed run augments exactly as an
uninterrupted one; kornia's augmentations draw from the global RNG.
"""

from __future__ import annotations

import torch

from fedgan.config import AUGMENTATIONS as POLICIES
from fedgan.errors import FedGANError


def parse_policy(policy: str) -> tuple[str, ...]:
    """`"flip,translation"` -> ("flip", "translation"); an empty string is no augmentation."""
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise FedGANError(f"unknown augmentation {unknown[0]!r}; choose from {', '.join(POLICIES)} (comma-separated)")
    return names


def _uniform(rng: torch.Generator, count: int, device: torch.device) -> torch.Tensor:
    return torch.rand(count, generator=rng).to(device)


def mirror(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2 (real images only, see above)."""
    mirrored = _uniform(rng, x.shape[0], x.device) < 0.5
    return torch.where(mirrored[:, None, None, None], x.flip(-1), x)


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by whole pixels in [-ratio*size, ratio*size]; uncovered pixels are black (-1)."""
    n, _, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), generator=rng).to(x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), generator=rng).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :, None] - dy  # source row of each output row, (n, h, 1)
    cols = torch.arange(w, device=x.device)[None, None, :] - dx  # (n, 1, w)
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w))[:, None]  # (n, 1, h, w)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(n, 1, h * w).expand(-1, x.shape[1], -1)
    moved = x.reshape(n, x.shape[1], h * w).gather(2, flat).reshape_as(x)
    return torch.where(inside, moved, torch.full_like(x, -1.0))


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Set one square of `ratio` x size, centred anywhere in the image, to 0."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - size_y % 2), (n, 1, 1), generator=rng).to(x.device)
    cx = torch.randint(0, w + (1 - size_x % 2), (n, 1, 1), generator=rng).to(x.device)
    top, left = cy - size_y // 2, cx - size_x // 2  # the square may reach past the border
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    hole = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * (~hole[:, None]).to(x.dtype)


def color(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Brightness in [-0.5, 0.5) and contrast in [0.5, 1.5), per image, as the reference."""
    n = x.shape[0]
    x = x + (_uniform(rng, n, x.device) - 0.5)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(rng, n, x.device) + 0.5)[:, None, None, None] + mean


TRANSFORMS = {"translation": translation, "cutout": cutout, "color": color}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], rng: torch.Generator) -> torch.Tensor:
    """`x` (N, C, H, W in [-1, 1]) through each transform of `policy`, in the reference's order;
    an empty policy returns `x` itself and draws nothing."""
    if not policy:
        return x
    for name in POLICIES:
        if name in policy:
            x = TRANSFORMS[name](x, rng)
    return x.contiguous()


def augment_generator(seed: int) -> torch.Generator:
    """The generator of all augmentation draws of a run (apart from the noise generator, so that
    switching augmentation on or off leaves z and the fake grades unchanged)."""
    return torch.Generator(device="cpu").manual_seed(seed + 2)
