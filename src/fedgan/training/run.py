"""Centralised training (and CT pretraining) into a run folder, resumable from its last checkpoint.

```
RUN/config.toml       seed, configs, versions, the store's hash, the `--init` checkpoint
RUN/metrics.jsonl     one line per step: epoch, step, losses, D(x), D(G(z)), images/s, training seconds;
                      every `eval-every` steps one more with "eval": KID and FD on the store's fixed evaluator
RUN/samples/          epoch-NNNN.png, fixed noise
RUN/checkpoints/      epoch-NNNN.pt, `latest`, and best.pt (the lowest in-training KID so far)
```
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from fedgan.config import TrainConfig, to_dict
from fedgan.data.store import Store
from fedgan.errors import FedGANError
from fedgan.models.dcgan import GANConfig
from fedgan.provenance import write_run_record
from fedgan.training.checkpoint import (
    BEST,
    init_from_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    restore_state,
    save_checkpoint,
)
from fedgan.training.loop import GANState, StepStats, Throughput, new_state, train_epoch
from fedgan.training.privacy import attach_privacy
from fedgan.training.samples import save_samples

log = logging.getLogger(__name__)

#: measures a training state's images (e.g. `fedgan.evaluation.probe.QualityProbe`): {"kid": ..., "fd": ..., ...}
Probe = Callable[[GANState], dict[str, float]]


def load_training_data(store: Store, conditional: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The store's training split in memory (the held-out split is never read here)."""
    images, labels = store.load("train")
    if conditional and (labels < 0).any():
        raise FedGANError(f"{store.path}: a conditional model needs graded images, but this store is unlabelled")
    return torch.from_numpy(images), torch.from_numpy(labels)


def model_config_for(store: Store, base: GANConfig, conditional: bool) -> GANConfig:
    """Resolution and channels come from the store; the rest from the user's config."""
    channels, height, _ = store.image_shape
    return dataclasses.replace(base, resolution=height, channels=channels, num_classes=5 if conditional else 0)


def private_steps_per_epoch(config: TrainConfig, dataset_size: int) -> int:
    """Discriminator updates per epoch: what DP-SGD's budget is spread over."""
    return dataset_size // min(config.batch_size, dataset_size) * config.d_steps


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines after `step`: a resumed run rewrites them identically."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def train_centralised(
    store_path: Path,
    run: Path,
    *,
    model_config: GANConfig = GANConfig(),
    train_config: TrainConfig = TrainConfig(),
    conditional: bool = False,
    init: Path | None = None,
    device: torch.device = torch.device("cpu"),
    progress: bool = True,
    stop_after_epochs: int | None = None,
    probe: Probe | None = None,
) -> GANState:
    """Train from scratch (or from `init`'s weights) for `train_config.epochs` epochs.

    `probe` measures quality every `train_config.eval_every` steps (and keeps `checkpoints/best`);
    `stop_after_epochs` ends the process early as an interruption would (for resume tests).
    """
    if (run / "checkpoints").exists():
        raise FedGANError(f"{run}: already holds a run (use `fedgan train --resume {run}` to continue it)")
    store = Store(store_path)
    config = model_config_for(store, model_config, conditional)
    images, labels = load_training_data(store, config.conditional)
    if len(images) < 2:
        raise FedGANError(f"{store_path}: needs at least 2 training images, has {len(images)}")
    state = new_state(config, train_config, device)
    if init is not None:
        fresh = init_from_checkpoint(state, init, train_config)
        log.info("initialised from %s%s", init, f" (new: {', '.join(fresh)})" if fresh else "")
    attach_privacy(
        state, train_config, len(images), train_config.epochs * private_steps_per_epoch(train_config, len(images))
    )
    run.mkdir(parents=True, exist_ok=True)
    write_run_record(
        run,
        seed=train_config.seed,
        stores={"train": store_path},
        config={
            "model": to_dict(config),
            "train": to_dict(train_config),
            "init": {"checkpoint": str(init) if init else ""},
        },
    )
    return _train(state, train_config, images, labels, run, progress, stop_after_epochs, store_path, probe, {})


def resume_centralised(
    run: Path,
    *,
    epochs: int | None = None,
    device: torch.device = torch.device("cpu"),
    progress: bool = True,
    probe: Probe | None = None,
) -> GANState:
    """Continue a run from `RUN/checkpoints/latest`, optionally to a new total of epochs."""
    data = read_checkpoint(run / "checkpoints" / "latest")
    state, train_config = restore_state(data, device)
    if epochs is not None:
        train_config = dataclasses.replace(train_config, epochs=epochs)
    store_path = run_store(run)
    store = Store(store_path)
    images, labels = load_training_data(store, state.model_config.conditional)
    attach_privacy(
        state,
        train_config,
        len(images),
        train_config.epochs * private_steps_per_epoch(train_config, len(images)),
        data.get("privacy"),
    )
    truncate_metrics(run / "metrics.jsonl", state.step)
    log.info("resuming %s at epoch %d, step %d", run, state.epoch, state.step)
    return _train(state, train_config, images, labels, run, progress, None, store_path, probe, data["extra"])


def run_store(run: Path) -> Path:
    """The store a run trains on, from its run record."""
    return Path(tomllib.loads((run / "config.toml").read_text())["data"]["train"]["path"])


def _train(
    state: GANState,
    config: TrainConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    run: Path,
    progress: bool,
    stop_after_epochs: int | None,
    store_path: Path,
    probe: Probe | None,
    saved: dict,
) -> GANState:
    """The epochs still to do; `saved` is the resumed checkpoint's extra record (training seconds, best KID)."""
    steps_per_epoch = len(images) // min(config.batch_size, len(images))
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
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as metrics:

        def on_step(state: GANState, stats: StepStats, batch: int) -> None:
            nonlocal step_started
            progress_record["seconds"] += time.perf_counter() - step_started
            if not stats.finite():
                raise FedGANError(
                    f"training diverged at step {state.step}: losses D {stats.d_loss}, G {stats.g_loss} "
                    f"(resume from {run / 'checkpoints' / 'latest'} with a lower learning rate)"
                )
            rate = speed.add(batch)
            line = {
                "epoch": state.epoch + 1,
                "step": state.step,
                **dataclasses.asdict(stats),
                "images_per_s": round(rate, 2),
                "seconds": round(progress_record["seconds"], 3),
            }
            if state.private:
                line["epsilon"] = round(state.private.epsilon(), 4)
            metrics.write(json.dumps(line) + "\n")
            if probe is not None and config.eval_every and state.step % config.eval_every == 0:
                quality = probe(state)
                metrics.write(
                    json.dumps(
                        {
                            "epoch": state.epoch + 1,
                            "step": state.step,
                            "eval": True,
                            "seconds": line["seconds"],
                            **quality,
                        }
                    )
                    + "\n"
                )
                if progress_record["best_kid"] is None or quality["kid"] < progress_record["best_kid"]:
                    progress_record["best_kid"] = quality["kid"]
                    save_checkpoint(state, config, run / "checkpoints", BEST, extra=progress_record, latest=False)
                bar.set_postfix(
                    d=f"{stats.d_loss:.3f}", g=f"{stats.g_loss:.3f}", kid=f"{quality['kid']:.3g}", refresh=False
                )
            else:
                bar.set_postfix(d=f"{stats.d_loss:.3f}", g=f"{stats.g_loss:.3f}", img_s=f"{rate:.1f}", refresh=False)
            bar.update()
            step_started = time.perf_counter()

        while state.epoch < config.epochs:
            step_started = time.perf_counter()
            train_epoch(state, images, labels, config, on_step)
            metrics.flush()
            save_samples(state, run / "samples" / f"epoch-{state.epoch:04d}.png", config.sample_count, config.seed)
            save_checkpoint(state, config, run / "checkpoints", f"epoch-{state.epoch:04d}", extra=progress_record)
            prune_checkpoints(run / "checkpoints", "epoch", config.keep_checkpoints)
            if stop_after_epochs is not None and state.epoch >= stop_after_epochs:
                break
    bar.close()
    return state
