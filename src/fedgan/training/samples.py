"""Fixed-noise sample grids, so images from different epochs and rounds are directly comparable."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from fedgan.atomic import write_bytes_atomic
from fedgan.training.loop import GANState, generate


def save_samples(state: GANState, path: Path, count: int, seed: int) -> None:
    """A grid from the run's fixed noise: the same z (and, when conditional, one row per grade)
    at every epoch or round, so grids of one run are directly comparable."""
    config = state.model_config
    z = torch.randn(count, config.latent_dim, generator=torch.Generator().manual_seed(seed + 7))
    if not config.conditional:
        save_grid(generate(state, z), path)
        return
    per_class = math.ceil(count / config.num_classes)
    grades = (torch.arange(count) // per_class).clamp(max=config.num_classes - 1)
    save_grid(generate(state, z, grades), path, columns=per_class)


def image_grid(images: torch.Tensor, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """N x C x H x W in [-1, 1] to one uint8 grid (gray or BGR) with black padding."""
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.uint8)
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = pixels[i]
    return grid[..., 0] if c == 1 else grid[..., ::-1]


def save_grid(images: torch.Tensor, path: Path, columns: int | None = None) -> None:
    ok, png = cv2.imencode(".png", image_grid(images, columns))
    assert ok, "OpenCV failed to encode a PNG"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, png.tobytes())
