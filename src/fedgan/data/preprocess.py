"""The preprocessing pipeline as small steps, each a pure function of (pixels, config).

Order (the paper's, with an optional field-of-view crop first so round retinas stay round):
decoded pixels (`fedgan.data.decode`, the "tensor conversion") -> crop to field of view ->
resize -> grayscale -> CLAHE -> normalise to [0, 1] -> gamma -> binning -> rescale to [-1, 1].

We use OpenCV's standard CLAHE. The paper used tf-clahe, whose output differs markedly (mean
89.8 vs 111.7 on the same input), so absolute intensities are not comparable with its stores.
"""

from __future__ import annotations

import cv2
import numpy as np

from fedgan.config import PreprocessConfig

_INTERPOLATION = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}

#: Pixels darker than this (0-255) count as the black surround of a fundus photograph.
FOV_THRESHOLD = 12


def crop_field_of_view(pixels: np.ndarray) -> np.ndarray:
    """Crop to the bounding box of the bright field and pad to a centred square.

    Fundus cameras put a round field on a black, usually wider-than-tall, sensor; resizing that
    straight to a square would squash the retina into an ellipse. Images with no dark surround
    (CT, already-cropped photographs) come back squared by padding only where needed.
    """
    gray = pixels if pixels.ndim == 2 else pixels.max(axis=2)
    rows = np.flatnonzero(gray.max(axis=1) > FOV_THRESHOLD)
    cols = np.flatnonzero(gray.max(axis=0) > FOV_THRESHOLD)
    if rows.size == 0 or cols.size == 0:
        return pixels  # an all-black image: nothing to crop to
    cropped = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = cropped.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    return cv2.copyMakeBorder(
        cropped, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=0
    )


def resize(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    if pixels.shape[:2] == (config.size, config.size):
        return pixels
    return cv2.resize(pixels, (config.size, config.size), interpolation=_INTERPOLATION[config.interpolation])


def grayscale(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    if config.grayscale and pixels.ndim == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    if not config.grayscale and pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    return pixels


def clahe(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation; colour images are equalised on L*."""
    if config.clahe_clip == 0:
        return pixels
    equaliser = cv2.createCLAHE(clipLimit=config.clahe_clip, tileGridSize=(config.clahe_tiles, config.clahe_tiles))
    if pixels.ndim == 2:
        return equaliser.apply(pixels)
    lab = cv2.cvtColor(pixels, cv2.COLOR_BGR2LAB)
    lab[..., 0] = equaliser.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def normalise(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) * np.float32(1 / 255)


def gamma(values: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    return values if config.gamma == 1 else np.power(values, np.float32(config.gamma))


def binning(values: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Quantise to `bins + 1` levels k/bins (the paper's round(x * 16) / 16)."""
    return values if config.bins == 0 else np.round(values * config.bins) / np.float32(config.bins)


def rescale(values: np.ndarray) -> np.ndarray:
    """[0, 1] to [-1, 1], the range of the generator's tanh output."""
    return values * np.float32(2) - np.float32(1)


def preprocess(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Decoded uint8 pixels to a float32 CHW array in [-1, 1] of shape (C, size, size)."""
    if config.crop_fov:
        pixels = crop_field_of_view(pixels)
    pixels = clahe(grayscale(resize(pixels, config), config), config)
    values = rescale(binning(gamma(normalise(pixels), config), config))
    return np.ascontiguousarray(values[None] if values.ndim == 2 else values.transpose(2, 0, 1))
