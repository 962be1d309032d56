"""The run folder: one format for centralised training, simulated and deployed federations.

Why one module: training, the federation, evaluation, the report, the sweep and the demo all
read and write the same folder, and each used to spell its paths and line keys itself.

```
RUN/config.toml          the run record: seed, configs, package versions, the stores' hashes
RUN/metrics.jsonl        centralised: a line per step (epoch, step, losses, D(x), D(G(z)), images/s,
                         seconds) and, every eval-every steps, an "eval" line with KID and FD;
                         federated: a line per hospital and round, then an "aggregate" line per round
                         (seconds, hospitals, mean losses, KID and FD)
RUN/samples/             epoch-NNNN.png or round-NNNN.png: fixed noise, a row per grade
RUN/checkpoints/         epoch-NNNN.pt or round-NNNN.pt (the last --keep-checkpoints), latest, best.pt
RUN/eval/                metrics.json (`fedgan evaluate`), privacy.json (`fedgan audit`)
RUN/privacy.jsonl        federated DP-SGD: what each hospital's steps spent, per round
RUN/hospitals/           mdgan in simulation: each hospital's discriminator (in a deployment, its own disk)
RUN/report.html          `fedgan report`
```
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedgan.errors import FedGANError
from fedgan.provenance import write_run_record

LATEST = "latest"  # the link to a run's newest checkpoint

# Keys of metrics.jsonl lines that more than one module reads.
EPOCH = "epoch"
STEP = "step"
ROUND = "round"
EVAL = "eval"  # a centralised line that holds an in-training evaluation
AGGREGATE = "aggregate"  # a federated line that closes a round
SECONDS = "seconds"
KID = "kid"
FD = "fd"
GRADE_KAPPA = "grade_kappa"  # in-training: do a conditional generator's images carry their grades (probe.py)


@dataclasses.dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def record_file(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def latest(self) -> Path:
        return self.checkpoints / LATEST

    @property
    def evaluation(self) -> Path:
        return self.path / "eval"

    @property
    def ledger(self) -> Path:
        """Federated DP-SGD: a line per hospital and attempted round (`fedgan.federation.recorder`)."""
        return self.path / "privacy.jsonl"

    def has_run(self) -> bool:
        """Whether a run has written its first checkpoint here (and so can be resumed)."""
        return self.latest.exists()

    def refuse_existing(self, resume_command: str) -> None:
        """A new run never writes over an old one's checkpoints."""
        if self.checkpoints.exists():
            raise FedGANError(f"{self.path}: already holds a run (use `{resume_command} {self.path}` to continue it)")

    def create(self, *, seed: int, stores: dict[str, Path], config: dict[str, Any]) -> None:
        """The folder and its run record (written first: a run is reproducible before its first step)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_run_record(self.path, seed=seed, stores=stores, config=config)

    def record(self) -> dict[str, Any]:
        if not self.record_file.exists():
            raise FedGANError(f"{self.path}: not a run folder (no config.toml)")
        return tomllib.loads(self.record_file.read_text())

    def store(self) -> Path:
        """The store the run trains on (simulation and centralised training)."""
        return Path(self.record()["data"]["train"]["path"])

    def sample_grid(self, unit: str, number: int) -> Path:
        """`unit` is "epoch" (centralised) or "round" (federated)."""
        return self.samples / f"{unit}-{number:04d}.png"

    def lines(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def append(self, lines: Iterable[dict[str, Any]]) -> None:
        """Append lines and sync them to disk before returning (a round is committed by them)."""
        append_lines(self.metrics, lines)

    def truncate(self, step: int) -> None:
        """Drop centralised lines after `step`: a resumed run writes them again, identically."""
        if not self.metrics.exists():
            return
        kept = [line for line in self.lines() if line[STEP] <= step]
        self.metrics.write_text("".join(json.dumps(line) + "\n" for line in kept))

    def quality(self) -> list[dict[str, Any]]:
        """The in-training evaluations: the "eval" lines of a centralised run, the "aggregate" lines
        with a KID of a federated one."""
        return quality_points(self.lines())

    def best_kid(self) -> float | None:
        values = [line[KID] for line in self.quality()]
        return min(values) if values else None


def is_federated(lines: list[dict[str, Any]]) -> bool:
    return any(line.get(AGGREGATE) for line in lines)


def quality_points(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kind = AGGREGATE if is_federated(lines) else EVAL
    return [line for line in lines if line.get(kind) and KID in line]


def append_lines(path: Path, lines: Iterable[dict[str, Any]]) -> None:
    """Append JSON lines and sync them to disk before returning."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(line) + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())
