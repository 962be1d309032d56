"""Checkpoints: everything needed to resume a run exactly, or to start another from its weights.

A checkpoint holds both networks, the generator's moving average, both optimisers, the
epoch/step counters, the RNG states (noise, augmentation, torch), the resolved model and
training configs and the package version. It is written to a temporary
name and renamed, and `checkpoints/latest` (a symlink) is switched atomically afterwards, so an
interrupted save never leaves a half-written "latest".
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from fedgan import __version__
from fedgan.atomic import sync_folder, write_bytes_atomic
from fedgan.config import GANConfig, TrainConfig
from fedgan.errors import FedGANError
from fedgan.runfolder import LATEST, RunFolder
from fedgan.training.loop import GANState, make_ema, make_optimisers, new_state

log = logging.getLogger(__name__)

FORMAT = "fedgan-checkpoint"
FORMAT_VERSION = 2  # 2: EMA generator, augmentation RNG, spectral norm and upsampling in the model config
BEST = "best"  # the checkpoint with the lowest in-training KID so far


def state_dict(state: GANState, train_config: TrainConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fedgan_version": __version__,
        "model_config": dataclasses.asdict(state.model_config),
        "train_config": dataclasses.asdict(train_config),
        "generator": state.generator.state_dict(),
        "discriminator": state.discriminator.state_dict(),
        "opt_generator": state.opt_generator.state_dict(),
        "opt_discriminator": state.opt_discriminator.state_dict(),
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
    state: GANState,
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
    if not path.exists():
        raise FedGANError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise FedGANError(
            f"{path}: not a readable checkpoint, truncated or corrupt ({str(exc).splitlines()[0][:120]})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FedGANError(f"{path}: not a FedGAN checkpoint")
    if data.get("format_version") != FORMAT_VERSION:
        raise FedGANError(
            f"{path}: checkpoint format v{data.get('format_version')} from fedgan {data.get('fedgan_version')} "
            f"is not readable by fedgan {__version__} (format v{FORMAT_VERSION})"
        )
    return data


def restore_state(data: dict[str, Any], device: torch.device) -> tuple[GANState, TrainConfig]:
    """Rebuild the exact training state (architecture from the checkpoint) to resume a run."""
    model_config = GANConfig(**data["model_config"])
    train_config = TrainConfig(**data["train_config"])
    state = new_state(model_config, train_config, device)
    state.generator.load_state_dict(data["generator"])
    state.discriminator.load_state_dict(data["discriminator"])
    state.opt_generator.load_state_dict(data["opt_generator"])
    state.opt_discriminator.load_state_dict(data["opt_discriminator"])
    if state.generator_ema is not None:
        state.generator_ema.load_state_dict(data["generator_ema"])
    state.epoch, state.step = data["epoch"], data["step"]
    state.noise.set_state(data["rng"]["noise"])
    state.augment.set_state(data["rng"]["augment"])
    torch.set_rng_state(data["rng"]["torch"])
    if torch.cuda.is_available() and data["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(data["rng"]["cuda"])
    return state, train_config


def init_from_checkpoint(state: GANState, path: Path, train_config: TrainConfig) -> list[str]:
    """Transfer learning: copy a pretrained checkpoint's weights into `state` (fresh optimisers).

    Every shared parameter must match in shape, or nothing is loaded and the error names the
    first mismatch. The only parameters allowed to be missing from the source are the grade
    embeddings of a conditional model started from an unconditional one (e.g. CT pretraining
    has no grades); the modules they belong to are returned.
    """
    data = read_checkpoint(path)
    source = GANConfig(**data["model_config"])
    target = state.model_config
    for field in (
        "resolution",
        "channels",
        "latent_dim",
        "generator_width",
        "discriminator_width",
        "norm",
        "spectral_norm",
        "upsample",
    ):
        if getattr(source, field) != getattr(target, field):
            raise FedGANError(
                f"{path}: cannot initialise from this checkpoint: its {field.replace('_', '-')} is "
                f"{getattr(source, field)!r}, this run needs {getattr(target, field)!r}"
            )
    fresh: list[str] = []
    for name, module in (("generator", state.generator), ("discriminator", state.discriminator)):
        theirs, ours = data[name], module.state_dict()
        for key, value in ours.items():
            if key in theirs and theirs[key].shape != value.shape:
                raise FedGANError(
                    f"{path}: {name}.{key} has shape {tuple(theirs[key].shape)}, this run needs {tuple(value.shape)}"
                )
            if key not in theirs:
                if not key.startswith("embed."):
                    raise FedGANError(f"{path}: {name}.{key} is missing from the checkpoint")
                if f"{name}.embed" not in fresh:  # one entry per module (spectral norm gives it several tensors)
                    fresh.append(f"{name}.embed")
        unexpected = [k for k in theirs if k not in ours and not k.startswith("embed.")]
        if unexpected:
            raise FedGANError(f"{path}: {name} has parameters this model lacks: {', '.join(unexpected[:3])}")
    for name, module in (("generator", state.generator), ("discriminator", state.discriminator)):
        merged = module.state_dict()
        merged.update({k: v for k, v in data[name].items() if k in merged})
        module.load_state_dict(merged)
    state.opt_generator, state.opt_discriminator = make_optimisers(state.generator, state.discriminator, train_config)
    state.generator_ema = make_ema(state.generator, train_config)  # the average starts at the transferred weights
    return fresh
