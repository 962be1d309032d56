"""Checkpoints: everything needed to resume a run exactly, or to start another from its weights.

A checkpoint holds the networks (a GAN's two, a DDPM's denoiser), the moving average of what
generates images, the optimisers, the epoch/step counters, the RNG states (noise, augmentation,
torch), the resolved model config with its kind, the training config and the package version.
It is written to a temporary name and renamed, and `checkpoints/latest` (a symlink) is switched
atomically afterwards, so an interrupted save never leaves a half-written "latest".
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from pathlib import Path
from typing import Any

import torch

from fedgan import __version__
from fedgan.atomic import sync_folder, write_bytes_atomic
from fedgan.config import TrainConfig, model_from_record, model_record, train_from_record
from fedgan.errors import FedGANError
from fedgan.runfolder import LATEST, RunFolder
from fedgan.torchfile import load_torch_file
from fedgan.training.loop import TrainingState
from fedgan.training.states import new_model_state

log = logging.getLogger(__name__)

FORMAT = "fedgan-checkpoint"
FORMAT_VERSION = 2  # 2: EMA generator, augmentation RNG, spectral norm and upsampling in the model config
BEST = "best"  # the checkpoint with the lowest in-training KID so far


def state_dict(state: TrainingState, train_config: TrainConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fedgan_version": __version__,
        "model_config": model_record(state.model_config),
        "train_config": dataclasses.asdict(train_config),
        **{name: network.state_dict() for name, network in state.networks().items()},
        **{name: optimiser.state_dict() for name, optimiser in state.optimisers().items()},
        "generator_ema": state.generator_ema.state_dict() if state.generator_ema is not None else None,
        "epoch": state.epoch,
        "step": state.step,
        "rng": {
            "noise": state.noise.get_state(),
            "augment": state.augment.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "privacy": {"noise": state.private.noise, "history": [list(h) for h in state.private.history()]}
        if state.private
        else None,
        "extra": extra or {},
    }


def save_checkpoint(
    state: TrainingState,
    train_config: TrainConfig,
    folder: Path,
    name: str,
    extra: dict[str, Any] | None = None,
    *,
    latest: bool = True,
) -> Path:
    """Write `folder/name.pt` and, unless `latest` is False, point `folder/latest` at it."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state_dict(state, train_config, extra), buffer)
    path = folder / f"{name}.pt"
    write_bytes_atomic(path, buffer.getvalue())
    if not latest:
        return path
    link = folder / f".{LATEST}.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(path.name)
    os.replace(link, folder / LATEST)
    sync_folder(folder)
    return path


def prune_checkpoints(folder: Path, prefix: str, keep: int) -> None:
    """Delete all but the newest `keep` of our own `prefix-NNNN.pt` files (never `best.pt`, never
    what `latest` points at); `keep` 0 keeps everything. A 20-epoch run of the paper's widths
    would otherwise leave 2 GB of checkpoints."""
    if keep <= 0:
        return
    latest = (folder / LATEST).resolve().name if (folder / LATEST).exists() else None
    numbered = sorted(p for p in folder.glob(f"{prefix}-[0-9][0-9][0-9][0-9].pt") if p.name != latest)
    for old in numbered[: max(len(numbered) - (keep - 1 if latest else keep), 0)]:
        old.unlink()


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and validate a checkpoint file; every failure is one line naming the file.

    A run folder or its `latest` whose file is unreadable (a disk that lost the last write)
    falls back, with a warning, to the newest readable numbered checkpoint before it.
    """
    path = Path(path)
    if path.is_dir():  # a run folder, or its checkpoints folder
        path = RunFolder(path).latest if RunFolder(path).checkpoints.is_dir() else path / LATEST
    if path.name != LATEST:
        return read_checkpoint_file(path)
    try:
        return read_checkpoint_file(path.resolve() if path.is_symlink() else path)  # errors name the file, not the link
    except FedGANError as problem:
        broken = path.resolve().name
        for older in sorted(
            (p for p in path.parent.glob("*-[0-9][0-9][0-9][0-9].pt") if p.name != broken), reverse=True
        ):
            try:
                data = read_checkpoint_file(older)
            except FedGANError:
                continue
            log.warning("%s; resuming from %s instead", problem, older.name)
            return data
        raise


def read_checkpoint_file(path: Path) -> dict[str, Any]:
    """Load and validate one checkpoint file."""
    data = load_torch_file(path, "checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FedGANError(f"{path}: not a FedGAN checkpoint")
    if data.get("format_version") != FORMAT_VERSION:
        raise FedGANError(
            f"{path}: checkpoint format v{data.get('format_version')} from fedgan {data.get('fedgan_version')} "
            f"is not readable by fedgan {__version__} (format v{FORMAT_VERSION})"
        )
    return data


def restore_state(data: dict[str, Any], device: torch.device) -> tuple[TrainingState, TrainConfig]:
    """Rebuild the exact training state (architecture from the checkpoint) to resume a run."""
    model_config = model_from_record(data["model_config"])
    train_config = train_from_record(data["train_config"])
    state = new_model_state(model_config, train_config, device)
    for name, network in state.networks().items():
        network.load_state_dict(data[name])
    for name, optimiser in state.optimisers().items():
        optimiser.load_state_dict(data[name])
    if state.generator_ema is not None:
        state.generator_ema.load_state_dict(data["generator_ema"])
    state.epoch, state.step = data["epoch"], data["step"]
    state.noise.set_state(data["rng"]["noise"])
    state.augment.set_state(data["rng"]["augment"])
    torch.set_rng_state(data["rng"]["torch"])
    if torch.cuda.is_available() and data["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(data["rng"]["cuda"])
    return state, train_config


#: per kind, the parameters a conditional model may lack in an unconditional source (its grade embeddings)
GRADE_EMBEDDINGS = {"gan": ("embed.", "grade_norms.", "grade_head.", "twin_head."), "ddpm": ("unet.class_embedding.",)}
#: config fields that do not shape the weights, so a source may differ in them
NOT_SHAPING = {"num_classes", "grade_norm", "grade_head", "twin_head", "sample_steps", "guidance", "label_dropout"}


def init_from_checkpoint(state: TrainingState, path: Path, train_config: TrainConfig) -> list[str]:
    """Transfer learning: copy a pretrained checkpoint's weights into `state` (fresh optimisers).

    Every shared parameter must match in shape, or nothing is loaded and the error names the
    first mismatch. The only parameters allowed to be missing from the source are the grade
    embeddings of a conditional model started from an unconditional one (e.g. CT pretraining
    has no grades); the modules they belong to are returned.
    """
    data = read_checkpoint(path)
    source = model_from_record(data["model_config"])
    target = state.model_config
    if source.kind != target.kind:
        raise FedGANError(f"{path}: cannot initialise a {target.kind} from this checkpoint of a {source.kind}")
    for field in (f.name for f in dataclasses.fields(target) if f.name not in NOT_SHAPING):
        if getattr(source, field) != getattr(target, field):
            raise FedGANError(
                f"{path}: cannot initialise from this checkpoint: its {field.replace('_', '-')} is "
                f"{getattr(source, field)!r}, this run needs {getattr(target, field)!r}"
            )
    embeddings = GRADE_EMBEDDINGS[target.kind]
    fresh: list[str] = []
    for name, module in state.networks().items():
        theirs, ours = data[name], module.state_dict()
        for key, value in ours.items():
            if key in theirs and theirs[key].shape != value.shape:
                raise FedGANError(
                    f"{path}: {name}.{key} has shape {tuple(theirs[key].shape)}, this run needs {tuple(value.shape)}"
                )
            if key not in theirs:
                if not key.startswith(embeddings):
                    raise FedGANError(f"{path}: {name}.{key} is missing from the checkpoint")
                module_name = f"{name}.{next(e for e in embeddings if key.startswith(e)).rstrip('.')}"
                if module_name not in fresh:  # one entry per module (spectral norm gives it several tensors)
                    fresh.append(module_name)
        unexpected = [k for k in theirs if k not in ours and not k.startswith(embeddings)]
        if unexpected:
            raise FedGANError(f"{path}: {name} has parameters this model lacks: {', '.join(unexpected[:3])}")
    for name, module in state.networks().items():
        merged = module.state_dict()
        merged.update({k: v for k, v in data[name].items() if k in merged})
        module.load_state_dict(merged)
    state.restart(train_config)  # fresh optimisers; the average starts at the transferred weights
    return fresh
