"""The procedural fundus generator: layout, determinism, grade mix and realism against a real photograph."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skimage_data

from fedgan.data.sources.fundus_synth import render_fundus
from fedgan.data.sources.synth_sets import parse_grade_mix, write_fundus_set
from fedgan.errors import FedGANError


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_writes_the_eyepacs_layout(fundus_set: Path) -> None:
    with open(fundus_set / "trainLabels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [*rows[0]] == ["image", "level"]
    assert len(rows) == 40
    assert {r["image"] for r in rows} == {p.stem for p in (fundus_set / "train").glob("*.jpeg")}
    assert rows[0]["image"] == "1_left" and rows[1]["image"] == "1_right"
    assert {int(r["level"]) for r in rows} == {0, 1, 2, 3, 4}
    image = cv2.imread(str(fundus_set / "train" / "1_left.jpeg"))
    assert image.shape[0] == 192 and image.shape[2] == 3


def test_same_seed_same_bytes_for_any_worker_count(tmp_path: Path) -> None:
    write_fundus_set(tmp_path / "a", count=6, size=96, seed=5, workers=1, progress=False)
    write_fundus_set(tmp_path / "b", count=6, size=96, seed=5, workers=2, progress=False)
    write_fundus_set(tmp_path / "c", count=6, size=96, seed=6, workers=1, progress=False)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_grade_mix_is_honoured(tmp_path: Path) -> None:
    write_fundus_set(
        tmp_path / "s", count=30, size=64, seed=1, grade_mix=parse_grade_mix("0,0,1,0,1"), workers=1, progress=False
    )
    levels = {row.split(",")[1] for row in (tmp_path / "s" / "trainLabels.csv").read_text().splitlines()[1:]}
    assert levels == {"2", "4"}


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d,e", "0,0,0,0,0", "-1,1,1,1,1"])
def test_bad_grade_mix_is_a_clear_error(text: str) -> None:
    with pytest.raises(FedGANError, match="grade mix"):
        parse_grade_mix(text)


def test_existing_output_is_not_clobbered(fundus_set: Path) -> None:
    with pytest.raises(FedGANError, match="already exists"):
        write_fundus_set(fundus_set, count=1, size=64, progress=False)


def lesion_area(grade: int, seed: int) -> float:
    """Share of pixels that differ strongly from the same eye drawn as grade 0.

    Anatomy is drawn before lesions from the same random stream, so one seed gives the same eye
    at every grade and the difference is the lesions.
    """
    healthy = render_fundus(0, 256, np.random.default_rng(seed)).astype(np.int16)
    diseased = render_fundus(grade, 256, np.random.default_rng(seed)).astype(np.int16)
    return float((np.abs(diseased - healthy).max(axis=2) > 40).mean())


def test_lesion_load_grows_with_grade() -> None:
    load = [np.mean([lesion_area(g, seed) for seed in range(6)]) for g in range(5)]
    assert load[0] == 0
    assert 0 < load[1] < load[2] < load[3]
    assert load[4] > load[2]


def field_of_view_pixels(rgb: np.ndarray) -> np.ndarray:
    inside = rgb.max(axis=2) > 40
    inside = cv2.erode(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)  # away from the rim
    return rgb[inside]


def test_colours_inside_the_field_match_a_real_fundus_photograph() -> None:
    """Per-channel and intensity histograms inside the field of view, against skimage's retina."""
    real = field_of_view_pixels(cv2.resize(skimage_data.retina(), (512, 512), interpolation=cv2.INTER_AREA))
    fake = np.concatenate(
        [field_of_view_pixels(render_fundus(g % 3, 512, np.random.default_rng(100 + g))[..., ::-1]) for g in range(8)]
    )
    bins = np.linspace(0, 256, 33)
    for channel, name in enumerate("RGB"):
        h_real = np.histogram(real[:, channel], bins)[0] / len(real)
        h_fake = np.histogram(fake[:, channel], bins)[0] / len(fake)
        overlap = np.minimum(h_real, h_fake).sum()
        assert overlap > 0.7, f"{name} histogram overlap {overlap:.2f}"
        assert abs(np.median(real[:, channel]) - np.median(fake[:, channel])) < 15, name
    gray_real = real @ np.array([0.299, 0.587, 0.114])
    gray_fake = fake @ np.array([0.299, 0.587, 0.114])
    h_real, h_fake = (np.histogram(g, bins)[0] / len(g) for g in (gray_real, gray_fake))
    assert np.minimum(h_real, h_fake).sum() > 0.7
    assert (
        abs(
            np.percentile(gray_real, 90)
            - np.percentile(gray_real, 10)
            - (np.percentile(gray_fake, 90) - np.percentile(gray_fake, 10))
        )
        < 20
    )
