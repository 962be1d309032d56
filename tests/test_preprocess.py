"""Each preprocessing step on its own, and the whole pipeline's output contract."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fedgan.config import PreprocessConfig
from fedgan.data import preprocess as steps


def fundus_like(height: int = 120, width: int = 180) -> np.ndarray:
    """A bright disc on a wide black sensor, like a fundus camera's frame."""
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, (width // 2, height // 2), height // 2 - 2, (40, 80, 200), -1)
    return image


def test_crop_field_of_view_gives_a_centred_square() -> None:
    cropped = steps.crop_field_of_view(fundus_like())
    assert cropped.shape[0] == cropped.shape[1] == 117
    mask = cropped.max(axis=2) > 12
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 1  # still a circle


def test_crop_pads_non_square_content_and_ignores_black_images() -> None:
    bright = np.full((20, 50), 200, np.uint8)
    assert steps.crop_field_of_view(bright).shape == (50, 50)
    black = np.zeros((10, 30), np.uint8)
    assert steps.crop_field_of_view(black).shape == (10, 30)


def test_clahe_raises_local_contrast_and_can_be_disabled() -> None:
    rng = np.random.default_rng(0)
    flat = (120 + rng.normal(0, 4, (64, 64))).clip(0, 255).astype(np.uint8)
    equalised = steps.clahe(flat, PreprocessConfig(size=64))
    assert equalised.std() > 2 * flat.std()
    assert steps.clahe(flat, PreprocessConfig(size=64, clahe_clip=0)) is flat


def test_gamma_binning_and_rescale_values() -> None:
    config = PreprocessConfig(size=8, gamma=2.0, bins=4)
    x = np.array([0.0, 0.5, 0.6, 1.0], np.float32)
    assert steps.gamma(x, config).tolist() == pytest.approx([0.0, 0.25, 0.36, 1.0])
    assert steps.binning(np.array([0.1, 0.13, 0.36, 0.99], np.float32), config).tolist() == [0.0, 0.25, 0.25, 1.0]
    assert steps.rescale(np.array([0.0, 0.5, 1.0], np.float32)).tolist() == [-1.0, 0.0, 1.0]


@pytest.mark.parametrize("grayscale", [True, False])
def test_pipeline_output_contract(grayscale: bool) -> None:
    config = PreprocessConfig(size=64, grayscale=grayscale)
    out = steps.preprocess(fundus_like(240, 360), config)
    assert out.dtype == np.float32
    assert out.shape == ((1 if grayscale else 3), 64, 64)
    assert out.min() >= -1 and out.max() <= 1
    levels = (out + 1) / 2 * config.bins
    assert np.allclose(levels, np.round(levels), atol=1e-5)  # binned to k/16
    assert out[:, 0, 0].max() == -1  # black corner stays black
    assert out[:, 32, 32].min() > -1


def test_steps_follow_config_not_defaults() -> None:
    image = fundus_like(240, 360)
    image[..., 2] = np.tile(np.linspace(0, 255, 360, dtype=np.uint8), (240, 1)) * (image[..., 2] > 0)
    coarse = steps.preprocess(image, PreprocessConfig(size=64, bins=2, gamma=1.0))
    assert set(np.unique(coarse).tolist()) <= {-1.0, 0.0, 1.0}
    unbinned = steps.preprocess(image, PreprocessConfig(size=64, bins=0))
    assert len(np.unique(unbinned)) > 17
