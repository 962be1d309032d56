"""Centralised training (and CT pretraining) into a run folder, resumable from its last checkpoint.

The folder's format is `fedgan.runfolder`'s: samples and checkpoints per epoch, a metrics line
per step and an "eval" line every `eval-every` steps, `checkpoints/best` by in-training KID.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from fedgan.config import GANConfig, ModelConfig, TrainConfig, model_table, to_dict
from fedgan.data.store import Store
from fedgan.errors import FedGANError
from fedgan.runfolder import EPOCH, EVAL, KID, SECONDS, STEP, RunFolder
from fedgan.training.board import Board
from fedgan.training.checkpoint import (
    BEST,
    init_from_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    restore_state,
    save_checkpoint,
)
from fedgan.training.data import EpochData, training_data
from fedgan.training.grids import save_fixed_grid
from fedgan.training.loop import StepStats, Throughput, TrainingState, train_epoch
from fedgan.training.privacy import attach_privacy
from fedgan.training.states import new_model_state

log = logging.getLogger(__name__)

#: measures a training state's images (e.g. `fedgan.evaluation.probe.QualityProbe`): {"kid": ..., "fd": ..., ...}
Probe = Callable[[TrainingState], dict[str, float]]


def load_training_data(store: Store, conditional: bool, memory_mb: float) -> EpochData:
    """The store's training split, in memory or streamed (the held-out split is never read here)."""
    if conditional and (store.labels("train") < 0).any():
        raise FedGANError(f"{store.path}: a conditional model needs graded images, but this store is unlabelled")
    return training_data(store, None, memory_mb)


def model_config_for(store: Store, base: ModelConfig, conditional: bool) -> ModelConfig:
    """Resolution and channels come from the store; the rest from the user's config (a GAN's or a DDPM's)."""
    channels, height, _ = store.image_shape
    return dataclasses.replace(base, resolution=height, channels=channels, num_classes=5 if conditional else 0)


def private_steps_per_epoch(config: TrainConfig, dataset_size: int) -> int:
    """Discriminator updates per epoch: what DP-SGD's budget is spread over."""
    return dataset_size // min(config.batch_size, dataset_size) * config.d_steps


def train_centralised(
    store_path: Path,
    run: Path,
    *,
    model_config: ModelConfig = GANConfig(),
    train_config: TrainConfig = TrainConfig(),
    conditional: bool = False,
    init: Path | None = None,
    device: torch.device = torch.device("cpu"),
    progress: bool = True,
    stop_after_epochs: int | None = None,
    probe: Probe | None = None,
) -> TrainingState:
    """Train from scratch (or from `init`'s weights) for `train_config.epochs` epochs.

    `probe` measures quality every `train_config.eval_every` steps (and keeps `checkpoints/best`);
    `stop_after_epochs` ends the process early as an interruption would (for resume tests).
    """
    folder = RunFolder(run)
    folder.refuse_existing("fedgan train --resume")
    store = Store(store_path)
    config = model_config_for(store, model_config, conditional)
    data = load_training_data(store, config.conditional, train_config.memory_mb)
    if data.count < 2:
        raise FedGANError(f"{store_path}: needs at least 2 training images, has {data.count}")
    state = new_model_state(config, train_config, device)
    if init is not None:
        fresh = init_from_checkpoint(state, init, train_config)
        log.info("initialised from %s%s", init, f" (new: {', '.join(fresh)})" if fresh else "")
    attach_privacy(
        state, train_config, data.count, train_config.epochs * private_steps_per_epoch(train_config, data.count)
    )
    folder.create(
        seed=train_config.seed,
        stores={"train": store_path},
        config={
            "model": model_table(config),
            "train": to_dict(train_config),
            "init": {"checkpoint": str(init) if init else ""},
        },
    )
    return _train(state, train_config, data, run, progress, stop_after_epochs, store_path, probe, {})


def resume_centralised(
    run: Path,
    *,
    epochs: int | None = None,
    device: torch.device = torch.device("cpu"),
    progress: bool = True,
    probe: Probe | None = None,
) -> TrainingState:
    """Continue a run from `RUN/checkpoints/latest`, optionally to a new total of epochs."""
    folder = RunFolder(run)
    saved = read_checkpoint(folder.latest)
    state, train_config = restore_state(saved, device)
    if epochs is not None:
        train_config = dataclasses.replace(train_config, epochs=epochs)
    store_path = folder.store()
    store = Store(store_path)
    data = load_training_data(store, state.model_config.conditional, train_config.memory_mb)
    attach_privacy(
        state,
        train_config,
        data.count,
        train_config.epochs * private_steps_per_epoch(train_config, data.count),
        saved.get("privacy"),
    )
    folder.truncate(state.step)
    log.info("resuming %s at epoch %d, step %d", run, state.epoch, state.step)
    return _train(state, train_config, data, run, progress, None, store_path, probe, saved["extra"])


def losses(state: TrainingState, stats: StepStats) -> dict[str, str]:
    """The progress bar's losses: D and G for a GAN, the denoising loss for a DDPM."""
    if state.model_config.kind == "ddpm":
        return {"loss": f"{stats.g_loss:.4f}"}
    return {"d": f"{stats.d_loss:.3f}", "g": f"{stats.g_loss:.3f}"}


def _train(
    state: TrainingState,
    config: TrainConfig,
    data: EpochData,
    run: Path,
    progress: bool,
    stop_after_epochs: int | None,
    store_path: Path,
    probe: Probe | None,
    saved: dict,
) -> TrainingState:
    """The epochs still to do; `saved` is the resumed checkpoint's extra record (training seconds, best KID)."""
    folder = RunFolder(run)
    steps_per_epoch = data.count // min(config.batch_size, data.count)
    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=state.epoch * steps_per_epoch,
        desc="train",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    speed = Throughput()
    progress_record = {
        "store": str(store_path),
        "seconds": float(saved.get("seconds", 0.0)),
        "best_kid": saved.get("best_kid"),
    }
    step_started = time.perf_counter()
    board = Board(run) if config.tensorboard else None
    with open(folder.metrics, "a", encoding="utf-8") as metrics:

        def on_step(state: TrainingState, stats: StepStats, batch: int) -> None:
            nonlocal step_started
            progress_record["seconds"] += time.perf_counter() - step_started
            if not stats.finite():
                raise FedGANError(
                    f"training diverged at step {state.step}: losses D {stats.d_loss}, G {stats.g_loss} "
                    f"(resume from {folder.latest} with a lower learning rate)"
                )
            rate = speed.add(batch)
            line = {
                EPOCH: state.epoch + 1,
                STEP: state.step,
                **dataclasses.asdict(stats),
                "images_per_s": round(rate, 2),
                SECONDS: round(progress_record["seconds"], 3),
            }
            if state.private:
                line["epsilon"] = round(state.private.epsilon(), 4)
            metrics.write(json.dumps(line) + "\n")
            if board is not None:
                board.lines([line])
            if probe is not None and config.eval_every and state.step % config.eval_every == 0:
                quality = probe(state)
                evaluation = {EPOCH: state.epoch + 1, STEP: state.step, EVAL: True, SECONDS: line[SECONDS], **quality}
                metrics.write(json.dumps(evaluation) + "\n")
                if board is not None:
                    board.lines([evaluation])
                if progress_record["best_kid"] is None or quality[KID] < progress_record["best_kid"]:
                    progress_record["best_kid"] = quality[KID]
                    save_checkpoint(state, config, folder.checkpoints, BEST, extra=progress_record, latest=False)
                bar.set_postfix(**losses(state, stats), kid=f"{quality[KID]:.3g}", refresh=False)
            else:
                bar.set_postfix(**losses(state, stats), img_s=f"{rate:.1f}", refresh=False)
            bar.update()
            step_started = time.perf_counter()

        while state.epoch < config.epochs:
            step_started = time.perf_counter()
            train_epoch(state, data, config, on_step)
            metrics.flush()
            save_fixed_grid(state, folder.sample_grid(EPOCH, state.epoch), config.sample_count, config.seed)
            if board is not None:
                board.grid(folder.sample_grid(EPOCH, state.epoch), state.step)
            save_checkpoint(state, config, folder.checkpoints, f"{EPOCH}-{state.epoch:04d}", extra=progress_record)
            prune_checkpoints(folder.checkpoints, EPOCH, config.keep_checkpoints)
            if stop_after_epochs is not None and state.epoch >= stop_after_epochs:
                break
    bar.close()
    if board is not None:
        board.close()
    return state
