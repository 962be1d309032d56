"""Write whole procedural data sets in the on-disk layouts of the real ones.

`write_fundus_set` writes the EyePACS layout (`train/<id>.jpeg` + `trainLabels.csv`) and
`write_ct_set` the RSNA Abdominal Trauma layout (`<patient>/<series>/<n>.dcm`), so the default
pipeline reads them with the same readers a hospital uses on its real data. Each image comes
from a random stream seeded by (seed, index): the output is identical for any worker count.
Output folders are staged and renamed when complete (see `fedgan.atomic`).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fedgan.atomic import staged_directory
from fedgan.config import NUM_GRADES, SCREENING_GRADE_MIX
from fedgan.data.sources.ct_synth import ct_dataset, render_ct_slice, sample_body
from fedgan.data.sources.fundus_synth import render_fundus
from fedgan.data.sources.tabular import EYEPACS, write_label_csv
from fedgan.errors import FedGANError
from fedgan.parallel import default_workers, ordered_map


@dataclasses.dataclass(frozen=True)
class SynthSummary:
    out: Path
    images: int
    per_grade: dict[int, int]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def eyepacs_id(index: int) -> str:
    """EyePACS names images `<patient>_<left|right>`; consecutive indices are one patient's eyes."""
    return f"{index // 2 + 1}_{'left' if index % 2 == 0 else 'right'}"


def normalise_grade_mix(weights: Sequence[float]) -> tuple[float, ...]:
    """Five non-negative weights (any scale) to probabilities for grades 0-4."""
    if len(weights) != NUM_GRADES or min(weights) < 0 or sum(weights) <= 0:
        raise FedGANError(
            f"grade mix must be {NUM_GRADES} non-negative weights with a positive sum, got {list(weights)}"
        )
    return tuple(float(w) / sum(weights) for w in weights)


def parse_grade_mix(text: str) -> tuple[float, ...]:
    """`"0.7,0.1,0.1,0.05,0.05"` or `"1,1,1,1,1"` to five probabilities."""
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise FedGANError(f"grade mix must be {NUM_GRADES} comma-separated numbers, got {text!r}") from None
    return normalise_grade_mix(weights)


@dataclasses.dataclass(frozen=True)
class _FundusJob:
    folder: Path
    index: int
    grade: int
    size: int
    seed: int


def _write_fundus(job: _FundusJob) -> None:
    rng = np.random.default_rng([job.seed, job.index])
    image_id = eyepacs_id(job.index)
    bgr = render_fundus(job.grade, job.size, rng, laterality=image_id.split("_")[1])
    quality = int(rng.integers(85, 96))
    ok, encoded = cv2.imencode(".jpeg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok, "OpenCV failed to encode a JPEG it rendered"
    (job.folder / f"{image_id}.jpeg").write_bytes(encoded.tobytes())


def write_fundus_set(
    out: Path,
    *,
    count: int,
    size: int = 512,
    seed: int = 0,
    grade_mix: Sequence[float] = SCREENING_GRADE_MIX,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthSummary:
    """Write `count` procedural fundus photographs in the EyePACS layout under `out`."""
    if count < 1:
        raise FedGANError(f"--count must be at least 1, got {count}")
    if not 64 <= size <= 4096:
        raise FedGANError(f"--size must be between 64 and 4096 pixels, got {size}")
    grades = np.random.default_rng(seed).choice(NUM_GRADES, size=count, p=np.asarray(normalise_grade_mix(grade_mix)))
    started = time.perf_counter()
    with staged_directory(out, overwrite=overwrite) as staging:
        images = staging / "train"
        images.mkdir()
        jobs = (_FundusJob(images, i, int(g), size, seed) for i, g in enumerate(grades))
        for _ in ordered_map(
            _write_fundus,
            jobs,
            total=count,
            workers=workers or default_workers(),
            description="fundus",
            progress=progress,
        ):
            pass
        write_label_csv(staging, EYEPACS, [(eyepacs_id(i), int(g)) for i, g in enumerate(grades)])
    per_grade = dict(sorted(Counter(int(g) for g in grades).items()))
    return SynthSummary(Path(out), count, per_grade, time.perf_counter() - started)


@dataclasses.dataclass(frozen=True)
class _CtJob:
    folder: Path
    patient: int
    series: int
    index: int
    slices: int
    size: int
    seed: int


def _write_ct(job: _CtJob) -> None:
    body = sample_body(np.random.default_rng([job.seed, job.patient]))
    rng = np.random.default_rng([job.seed, job.patient, job.index])
    z = job.index / max(job.slices - 1, 1)
    hu = render_ct_slice(body, z, job.size, rng)
    ds = ct_dataset(hu, seed=job.seed, patient=job.patient, series=job.series, index=job.index, count=job.slices)
    ds.save_as(job.folder / f"{job.index + 1}.dcm", enforce_file_format=True)


def write_ct_set(
    out: Path,
    *,
    patients: int,
    slices: int = 32,
    size: int = 512,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthSummary:
    """Write one axial series of `slices` DICOM slices for each of `patients` procedural patients."""
    if patients < 1 or slices < 1:
        raise FedGANError(f"--patients and --slices must be at least 1, got {patients} and {slices}")
    if not 64 <= size <= 1024:
        raise FedGANError(f"--size must be between 64 and 1024 pixels, got {size}")
    started = time.perf_counter()
    with staged_directory(out, overwrite=overwrite) as staging:
        jobs = []
        for p in range(patients):
            patient_id = 10000 + p  # RSNA patient ids are plain integers
            series_id = int(np.random.default_rng([seed, p, 7]).integers(1000, 65000))
            folder = staging / str(patient_id) / str(series_id)
            folder.mkdir(parents=True)
            jobs.extend(_CtJob(folder, patient_id, series_id, k, slices, size, seed) for k in range(slices))
        for _ in ordered_map(
            _write_ct, jobs, total=len(jobs), workers=workers or default_workers(), description="ct", progress=progress
        ):
            pass
    return SynthSummary(Path(out), len(jobs), {}, time.perf_counter() - started)
