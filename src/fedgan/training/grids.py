"""Image grids: the fixed-noise grid a run saves every epoch or round (so its grids are directly
comparable), and the grid layout the report reuses."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from fedgan.atomic import write_bytes_atomic
from fedgan.training.loop import Sampling, generate


def save_fixed_grid(state: Sampling, path: Path, count: int, seed: int) -> None:
    """A grid from the run's fixed noise: the same z at every epoch or round, so grids of one run
    are directly comparable. A conditional model's grid has exactly one row per grade, labelled,
    with ceil(count / grades) images in each."""
    config = state.model_config
    if not config.conditional:
        z = torch.randn(count, config.latent_dim, generator=torch.Generator().manual_seed(seed + 7))
        save_grid(generate(state, z), path)
        return
    per_grade = math.ceil(count / config.num_classes)
    z = torch.randn(
        per_grade * config.num_classes, config.latent_dim, generator=torch.Generator().manual_seed(seed + 7)
    )
    grades = torch.arange(len(z)) // per_grade
    save_grid(
        generate(state, z, grades),
        path,
        columns=per_grade,
        row_labels=[f"grade {g}" for g in range(config.num_classes)],
    )


def image_grid(
    images: torch.Tensor, columns: int | None = None, pad: int = 2, row_labels: list[str] | None = None
) -> np.ndarray:
    """N x C x H x W in [-1, 1] to one uint8 grid (gray or BGR) with black padding; `row_labels`
    adds a strip on the left naming each row."""
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.uint8)
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = pixels[
            i
        ]
    if row_labels:
        strip = np.zeros((grid.shape[0], 64, c), np.uint8)
        for r, label in enumerate(row_labels[:rows]):
            cv2.putText(
                strip,
                label,
                (4, pad + r * (h + pad) + h // 2 + 4),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                (255,) * c,
                1,
                cv2.LINE_AA,
            )
        grid = np.concatenate([strip, grid], axis=1)
    return grid[..., 0] if c == 1 else grid[..., ::-1]


def save_grid(
    images: torch.Tensor, path: Path, columns: int | None = None, row_labels: list[str] | None = None
) -> None:
    ok, png = cv2.imencode(".png", image_grid(images, columns, row_labels=row_labels))
    assert ok, "OpenCV failed to encode a PNG"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, png.tobytes())
