"""`fedgan sample`: the synthetic dataset a federation publishes, in a layout others can read.

A conditional generator's images are written with their grades in the EyePACS layout
(`train/<id>.png` + `trainLabels.csv`), so any DR pipeline, and `fedgan prepare`, reads them as
it reads EyePACS; an unconditional generator's go into a plain folder of images. Images are
lossless 8-bit PNGs of the generator's output (already preprocessed: grayscale, the run's
resolution). `provenance.toml` names the checkpoint, round and seed they came from. The folder
appears only when complete.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import tomli_w
from tqdm import tqdm

from fedgan.atomic import check_destination, staged_directory
from fedgan.config import NUM_GRADES
from fedgan.data.sources.tabular import EYEPACS, write_label_csv
from fedgan.errors import FedGANError
from fedgan.evaluation.evaluate import generated_set
from fedgan.provenance import package_versions
from fedgan.training.trained import load_trained


@dataclasses.dataclass(frozen=True)
class SampleSummary:
    out: Path
    images: int
    per_grade: dict[int, int]  # empty for an unconditional generator


def write_synthetic_set(
    run: Path,
    out: Path,
    *,
    count: int,
    grade_mix: tuple[float, ...] | None = None,
    seed: int = 0,
    batch: int = 256,
    overwrite: bool = False,
    progress: bool = True,
) -> SampleSummary:
    """`count` generated images from RUN's latest checkpoint into `out`; grades by `grade_mix` (default: balanced)."""
    if count < 1:
        raise FedGANError(f"--count must be at least 1, got {count}")
    check_destination(out, [run], overwrite)  # before loading the model: nothing of the user's is touched
    state = load_trained(run)
    conditional = state.model_config.conditional
    mix = np.asarray(grade_mix or [1 / NUM_GRADES] * NUM_GRADES, np.float64)
    rows: list[tuple[str, int]] = []
    with staged_directory(out, overwrite=overwrite, inputs=[run]) as staging:
        images = staging / "train"
        images.mkdir()
        for start in tqdm(range(0, count, batch), desc="sample", unit="batch", disable=not progress):
            size = min(batch, count - start)
            pixels, grades = generated_set(
                state, size, mix / mix.sum() if conditional else None, seed * 1_000_003 + start
            )
            for offset, image in enumerate(pixels):
                name = f"synthetic-{start + offset:06d}"
                ok, png = cv2.imencode(".png", np.clip((image[0] + 1) * 127.5, 0, 255).round().astype(np.uint8))
                assert ok, "OpenCV failed to encode a PNG"
                (images / f"{name}.png").write_bytes(png.tobytes())
                if grades is not None:
                    rows.append((name, int(grades[offset])))
        if conditional:
            write_label_csv(staging, EYEPACS, rows)
        (staging / "provenance.toml").write_text(
            tomli_w.dumps(
                {
                    "source": {
                        "run": str(Path(run).resolve()),
                        "round": state.completed,
                        "seed": seed,
                        "count": count,
                        "conditional": conditional,
                    },
                    "versions": package_versions(),
                }
            )
        )
    return SampleSummary(Path(out), count, dict(sorted(Counter(g for _, g in rows).items())))
