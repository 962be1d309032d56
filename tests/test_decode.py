"""Decoding awkward files: damaged, mislabelled, 16-bit, CMYK, rotated, DICOM windowing."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image

from fedgan.config import PreprocessConfig
from fedgan.data.decode import decode_dicom, load_pixels, reduction_factor
from fedgan.data.sources.ct_synth import ct_dataset
from fedgan.errors import DataError

GRAY = PreprocessConfig(size=64)  # small enough that 64 x 96 test cards decode at full scale


def gradient(height: int = 64, width: int = 96) -> np.ndarray:
    """A left-dark, right-bright RGB test card, so orientation and content are checkable."""
    ramp = np.tile(np.linspace(0, 255, width, dtype=np.float32), (height, 1))
    return np.stack([ramp, ramp * 0.5, 255 - ramp], axis=2).astype(np.uint8)


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "a.jpeg").write_bytes(b"")
    with pytest.raises(DataError, match=r"a\.jpeg: empty file"):
        load_pixels(tmp_path / "a.jpeg", GRAY)


def test_non_image_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("patient list, do not share\n")
    with pytest.raises(DataError, match="not an image file"):
        load_pixels(tmp_path / "notes.jpg", GRAY)


def test_truncated_jpeg_and_png(tmp_path: Path) -> None:
    ok, jpeg = cv2.imencode(".jpg", gradient())
    (tmp_path / "cut.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    with pytest.raises(DataError, match="truncated JPEG"):
        load_pixels(tmp_path / "cut.jpg", GRAY)
    ok, png = cv2.imencode(".png", gradient())
    (tmp_path / "cut.png").write_bytes(png.tobytes()[: len(png) * 2 // 3])
    with pytest.raises(DataError, match="truncated PNG"):
        load_pixels(tmp_path / "cut.png", GRAY)


def test_corrupt_jpeg_body(tmp_path: Path) -> None:
    ok, jpeg = cv2.imencode(".jpg", gradient())
    data = bytearray(jpeg.tobytes())
    data[200:-2] = b"\x00" * (len(data) - 202)  # header intact, entropy-coded data destroyed
    (tmp_path / "zeros.jpg").write_bytes(bytes(data))
    try:
        pixels = load_pixels(tmp_path / "zeros.jpg", GRAY)
    except DataError as exc:
        assert "zeros.jpg" in str(exc)
    else:  # libjpeg may recover a (wrong) picture; it must at least be an image of the right size
        assert pixels.shape == (64, 96)


def test_sixteen_bit_png_keeps_its_range(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    cv2.imwrite(str(tmp_path / "deep.png"), ramp)
    pixels = load_pixels(tmp_path / "deep.png", GRAY)
    assert pixels.dtype == np.uint8
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.all(np.diff(pixels[0].astype(int)) >= 0)


def test_grayscale_and_cmyk_jpegs(tmp_path: Path) -> None:
    Image.fromarray(gradient()[..., 0]).save(tmp_path / "gray.jpg")
    Image.fromarray(gradient()).convert("CMYK").save(tmp_path / "cmyk.jpg")
    gray = load_pixels(tmp_path / "gray.jpg", GRAY)
    cmyk = load_pixels(tmp_path / "cmyk.jpg", GRAY)
    colour = load_pixels(tmp_path / "cmyk.jpg", PreprocessConfig(size=64, grayscale=False))
    assert gray.shape == cmyk.shape == (64, 96)
    assert colour.shape == (64, 96, 3)
    rgb_reference = cv2.cvtColor(gradient(), cv2.COLOR_RGB2GRAY).astype(int)
    assert np.abs(cmyk.astype(int) - rgb_reference).mean() < 12  # CMYK converted back, not misread


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.fromarray(gradient())
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "rotated.jpg", exif=exif)
    pixels = load_pixels(tmp_path / "rotated.jpg", GRAY)
    assert pixels.shape == (96, 64)  # displayed upright: portrait
    assert pixels[:10].mean() < pixels[-10:].mean()  # the bright right edge now at the bottom


def test_large_jpegs_are_decoded_at_reduced_scale(tmp_path: Path) -> None:
    big = cv2.resize(gradient(), (1600, 1200))
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    assert reduction_factor(1600, 1200, 128) == 8
    assert reduction_factor(1600, 1200, 256) == 4
    assert reduction_factor(1600, 1200, 1024) == 1
    pixels = load_pixels(tmp_path / "big.jpg", PreprocessConfig(size=256))
    assert pixels.shape == (300, 400)
    full = cv2.cvtColor(cv2.resize(big, (400, 300), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    assert np.abs(pixels.astype(int) - full.astype(int)).mean() < 3  # a faithful downscale


def write_slice(path: Path, hu: np.ndarray, photometric: str = "MONOCHROME2") -> Path:
    ds = ct_dataset(hu.astype(np.int16), seed=0, patient=1, series=1, index=0, count=1)
    ds.PhotometricInterpretation = photometric
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_rescale_window_and_monochrome1(tmp_path: Path) -> None:
    hu = np.array([[-1000, -160, 40], [240, 1000, 40]] * 4)
    config = PreprocessConfig(size=8, window_center=40, window_width=400)
    normal = decode_dicom(write_slice(tmp_path / "a.dcm", hu), config)
    assert normal[0].tolist() == [0, 0, 128]
    assert normal[1].tolist() == [255, 255, 128]
    inverted = decode_dicom(write_slice(tmp_path / "b.dcm", hu, "MONOCHROME1"), config)
    assert (inverted.astype(int) + normal.astype(int) == 255).all()


def test_broken_dicom(tmp_path: Path) -> None:
    (tmp_path / "x.dcm").write_bytes(b"DICM but not really" * 3)
    with pytest.raises(DataError, match="x.dcm"):
        load_pixels(tmp_path / "x.dcm", GRAY)
    ds = pydicom.dcmread(write_slice(tmp_path / "y.dcm", np.zeros((4, 4))))
    del ds.PixelData
    ds.save_as(tmp_path / "y.dcm", enforce_file_format=True)
    with pytest.raises(DataError, match="no pixel data"):
        load_pixels(tmp_path / "y.dcm", GRAY)


def png_bomb(path: Path, side: int) -> None:
    """A valid 16-bit grayscale PNG of side x side zeros: a few hundred KB on disk, 2 * side^2 bytes decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row = zlib.compressobj(9), bytes(1 + 2 * side)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0))
        + chunk(b"IDAT", body)
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    png_bomb(tmp_path / "bomb.png", 13000)
    assert (tmp_path / "bomb.png").stat().st_size < 2_000_000
    with pytest.raises(DataError, match=r"bomb\.png: 13000x13000 pixels is over the 50-megapixel limit"):
        load_pixels(tmp_path / "bomb.png", PreprocessConfig())
    with pytest.raises(DataError, match=r"bomb\.png: file of 0 MB is over the 0.0001 MB limit"):
        load_pixels(tmp_path / "bomb.png", PreprocessConfig(max_file_mb=1e-4))
