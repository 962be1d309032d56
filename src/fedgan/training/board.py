"""TensorBoard event files beside a run's own records (`--tensorboard`, the `tensorboard` extra).

Why: people who watch a long run live expect TensorBoard. The run folder stays the record (the
report reads only it); this mirrors each metrics line and sample grid as it is written, into
RUN/tensorboard/, so `tensorboard --logdir RUN` shows losses, KID, sample grids and, for a
federation, one curve per hospital. TensorBoard's writer needs the `tensorboard` package only,
not TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2

from fedgan.errors import FedGANError
from fedgan.runfolder import AGGREGATE, EVAL, ROUND, STEP

#: what is drawn; everything else in a line (counts, bytes, ids) is left to the report
SCALARS = (
    "d_loss",
    "g_loss",
    "d_real",
    "d_fake",
    "kid",
    "fd",
    "kid_grader",
    "fd_grader",
    "grade_kappa",
    "epsilon",
    "images_per_s",
)


class Board:
    def __init__(self, run: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise FedGANError(
                "--tensorboard needs the tensorboard package: pip install 'fedgan[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(run / "tensorboard"), flush_secs=10)  # live, not every 2 minutes

    def lines(self, lines: Iterable[dict[str, Any]]) -> None:
        """Scalars of metrics.jsonl lines: `train/` per step, `eval/` per in-training evaluation,
        `round/` per federated round, `hospital-N/` per hospital and round."""
        for line in lines:
            if "client" in line:
                group = f"hospital-{line['client']}"
            else:
                group = "round" if line.get(AGGREGATE) else EVAL if line.get(EVAL) else "train"
            step = int(line[ROUND] if ROUND in line else line[STEP])
            for key in SCALARS:
                if isinstance(line.get(key), int | float):
                    self.writer.add_scalar(f"{group}/{key}", line[key], step)

    def grid(self, path: Path, step: int) -> None:
        """A sample grid the run has just written (PNG), under `samples`."""
        image = cv2.imread(str(path), cv2.IMREAD_COLOR_RGB)
        if image is not None:
            self.writer.add_image("samples", image, step, dataformats="HWC")

    def flush(self) -> None:
        """On disk now: a federation's recorder has no end to close at, so it flushes every round."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
