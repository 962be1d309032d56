"""Turning one input file into a uint8 pixel array, or a one-line `DataError` saying why not.

JPEGs are decoded at a reduced scale when the target size allows (libjpeg's DCT scaling via
OpenCV's IMREAD_REDUCED_* flags): a 3000 px EyePACS photograph that will become 128 px is
decoded at 1/8 scale, which is most of `prepare`'s speed. EXIF orientation is applied; 16-bit
images are scaled to 8 bits; grayscale, palette and CMYK files are converted by the codec.
DICOM slices go through rescale slope/intercept and the configured Hounsfield window.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from fedgan.config import PreprocessConfig
from fedgan.errors import DataError

#: OpenCV flags for decoding at 1/1, 1/2, 1/4, 1/8 scale, in colour or grayscale.
_REDUCED = {
    (1, True): cv2.IMREAD_GRAYSCALE,
    (2, True): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    (4, True): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    (8, True): cv2.IMREAD_REDUCED_GRAYSCALE_8,
    (1, False): cv2.IMREAD_COLOR,
    (2, False): cv2.IMREAD_REDUCED_COLOR_2,
    (4, False): cv2.IMREAD_REDUCED_COLOR_4,
    (8, False): cv2.IMREAD_REDUCED_COLOR_8,
}


def reduction_factor(width: int, height: int, target: int) -> int:
    """Largest of 1/2/4/8 that keeps the short side at least the target size.

    libjpeg's scaled inverse DCT averages each 8x8 block's frequencies, a proper low-pass, so
    the decoded image is a clean downscale, and the area resize that follows does the rest.
    """
    factor = 1
    while factor < 8 and min(width, height) // (factor * 2) >= target:
        factor *= 2
    return factor


def read_header(data: bytes, path: Path) -> tuple[str, int, int]:
    """(format, width, height) without decoding pixels; rejects non-images and truncated files."""
    if not data:
        raise DataError(path, "empty file (0 bytes)", "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # PIL warns on odd headers and large images; `check_pixels` applies our own cap
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format or "?", image.size
    except UnidentifiedImageError:
        raise DataError(path, "not an image file (unknown format)", "not an image") from None
    except Exception as exc:  # PIL raises many types on damaged headers
        kind = "JPEG" if data[:2] == b"\xff\xd8" else "PNG" if data[:4] == b"\x89PNG" else "image"
        if "truncated" in str(exc).lower():
            raise DataError(path, f"truncated {kind} (header incomplete)", "truncated") from None
        raise DataError(path, f"unreadable {kind} header ({exc})", "unreadable header") from None
    if fmt == "JPEG" and b"\xff\xd9" not in data[-1024:]:
        raise DataError(path, "truncated JPEG (no end-of-image marker)", "truncated")
    if fmt == "PNG" and b"IEND" not in data[-64:]:
        raise DataError(path, "truncated PNG (no IEND chunk)", "truncated")
    return fmt, width, height


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """16-bit and float images to 0-255 (full range kept); uint8 passes through."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    lo, hi = float(pixels.min()), float(pixels.max())
    return np.zeros(pixels.shape, np.uint8) if hi <= lo else ((pixels - lo) / (hi - lo) * 255 + 0.5).astype(np.uint8)


def check_file_size(path: Path, config: PreprocessConfig) -> None:
    """Refuse a file over the byte cap before reading it."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror})", "cannot read") from None
    if size > config.max_file_mb * 1e6:
        raise DataError(
            path,
            f"file of {size / 1e6:.0f} MB is over the {config.max_file_mb:g} MB limit (--max-file-mb)",
            "too large",
        )


def check_pixels(path: Path, width: int, height: int, config: PreprocessConfig) -> None:
    """Refuse an image over the pixel cap from its header, before decoding: memory per worker stays bounded."""
    if width * height > config.max_megapixels * 1e6:
        raise DataError(
            path,
            f"{width}x{height} pixels is over the {config.max_megapixels:g}-megapixel limit (--max-megapixels)",
            "too large",
        )


def decode_image(path: Path, config: PreprocessConfig) -> np.ndarray:
    """Decode an image file to uint8, HxW (grayscale) or HxWx3 (BGR), reduced where possible."""
    check_file_size(path, config)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror})", "cannot read") from None
    fmt, width, height = read_header(data, path)
    check_pixels(path, width, height, config)
    buffer = np.frombuffer(data, np.uint8)
    factor = reduction_factor(width, height, config.size) if fmt == "JPEG" else 1
    if fmt == "JPEG" or width * height == 0:
        flags = _REDUCED[(factor, config.grayscale)]
    else:  # keep 16-bit PNG/TIFF depth until we scale it ourselves
        flags = cv2.IMREAD_ANYDEPTH | (cv2.IMREAD_GRAYSCALE if config.grayscale else cv2.IMREAD_COLOR)
    pixels = cv2.imdecode(buffer, flags)
    if pixels is None or pixels.size == 0:
        raise DataError(path, f"{fmt} file could not be decoded (corrupt data)", "corrupt data")
    return to_uint8(pixels)


def decode_dicom(path: Path, config: PreprocessConfig) -> np.ndarray:
    """A DICOM slice to uint8 through modality rescale and the Hounsfield window (MONOCHROME1 inverted)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_rescale

    check_file_size(path, config)
    try:
        ds = pydicom.dcmread(path)
        check_pixels(path, int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), config)
        stored = ds.pixel_array
    except InvalidDicomError:
        raise DataError(path, "not a DICOM file", "bad DICOM") from None
    except DataError:
        raise
    except (AttributeError, KeyError):
        raise DataError(path, "DICOM file has no pixel data", "bad DICOM") from None
    except Exception as exc:  # compressed syntaxes without a decoder, truncated pixel data, ...
        raise DataError(path, f"cannot decode DICOM pixels ({str(exc).splitlines()[0]})", "bad DICOM") from None
    if stored.ndim != 2:
        raise DataError(path, f"expected one 2-D slice, got pixel array of shape {stored.shape}", "bad DICOM")
    hu = apply_rescale(stored, ds).astype(np.float32)
    low = config.window_center - config.window_width / 2
    windowed = np.clip((hu - low) / config.window_width, 0.0, 1.0)
    gray = (windowed * 255 + 0.5).astype(np.uint8)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        gray = 255 - gray  # MONOCHROME1 stores white as the minimum
    return gray if config.grayscale else cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def load_pixels(path: Path, config: PreprocessConfig) -> np.ndarray:
    if path.suffix.lower() == ".dcm":
        return decode_dicom(path, config)
    return decode_image(path, config)
