"""A release: the one file a run publishes, holding what makes images and nothing else.

Why: a checkpoint resumes training, so it carries both networks, the moving average, both
optimisers' moments and RNG states, about six times the generator's size. Whoever receives a
trained model needs the generator that publishes images (the moving average when there is one)
and its shape. The discriminator stays behind on purpose: it is what a white-box
membership-inference attack (LOGAN) would use. The release names the checkpoint it came from,
with that file's sha256 and the run record, so a published dataset can be traced to its run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from fedgan import __version__
from fedgan.atomic import write_bytes_atomic
from fedgan.errors import FedGANError
from fedgan.runfolder import RunFolder
from fedgan.torchfile import load_torch_file
from fedgan.training.checkpoint import BEST, read_checkpoint

FORMAT = "fedgan-release"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Exported:
    path: Path
    source: Path  # the checkpoint file it came from
    progress: str  # "round 6" or "step 1008": how far its run had trained
    megabytes: float
    checkpoint_megabytes: float


def sampling_weights(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network that publishes images: the moving average's weights when the checkpoint has
    one (AveragedModel keeps them under "module."), else the generator's (a DDPM's denoiser)."""
    average = data.get("generator_ema")
    if average is None:
        return data["denoiser" if data["model_config"].get("kind") == "ddpm" else "generator"]
    return {k.removeprefix("module."): v for k, v in average.items() if k.startswith("module.")}


def checkpoint_file(run: Path, which: str) -> Path:
    """`best` (the lowest in-training KID), `latest`, or `auto` (best when there is one) of a run
    folder, or a checkpoint file itself."""
    folder = RunFolder(run)
    if not folder.checkpoints.is_dir():
        return run
    best = folder.checkpoints / f"{BEST}.pt"
    if which == BEST and not best.exists():
        raise FedGANError(f"{run}: has no best.pt (the run measured no in-training KID): use --checkpoint latest")
    if not folder.has_run():
        raise FedGANError(f"{run}: has no checkpoint yet")
    return best if which != "latest" and best.exists() else folder.latest.resolve()


def export_release(run: Path, out: Path, *, which: str = "auto") -> Exported:
    source = checkpoint_file(Path(run), which)
    data = read_checkpoint(source)
    raw = source.read_bytes()
    folder = RunFolder(Path(run))
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fedgan_version": __version__,
        "model_config": data["model_config"],
        "generator": sampling_weights(data),
        "source": {
            "checkpoint": str(source.resolve()),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "completed": int(data["extra"].get("round", data["epoch"])),
            "step": int(data["step"]),
            "seed": int(data["train_config"]["seed"]),
        },
        "run_record": folder.record_file.read_text() if folder.record_file.exists() else "",
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, buffer.getvalue())
    progress = f"round {data['extra']['round']}" if "round" in data["extra"] else f"step {data['step']}"
    return Exported(out, source, progress, len(buffer.getvalue()) / 2**20, len(raw) / 2**20)


def read_release(path: Path) -> dict[str, Any] | None:
    """The release at `path`, or None when `path` is not a release (a run folder or checkpoint)."""
    if not Path(path).is_file():
        return None
    try:
        data = load_torch_file(path, "release")
    except FedGANError:
        return None  # not a readable torch file: the checkpoint reader says what is wrong with it
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    if data.get("format_version") != FORMAT_VERSION:
        raise FedGANError(
            f"{path}: release format v{data.get('format_version')} is not readable by fedgan {__version__}"
        )
    return data
