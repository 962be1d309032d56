"""A hospital's side of `mdgan`: its own discriminator judges the server's images.

The discriminator, its optimiser, its augmentation stream and its place in the hospital's data
live on the hospital's disk (`current.pt`, and `round-NNNN.pt` after each round), never in a
message: only the gradients of the generator's loss with respect to the images it was sent go
back. In simulation that folder is `RUN/hospitals/hospital-<id>/` (one machine plays every
hospital); in deployment it is the SuperNode's `state-dir` node config. A hospital resumes from
its snapshot of the round the server resumes after, so a resumed federation continues exactly.
Where one engine worker serves every hospital (the simulation's default), the mid-round state stays
in that process's memory and only the round snapshots are written: the writes were a fifth of the
hospitals' time in the demo's federation.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict

from fedgan.atomic import write_bytes_atomic
from fedgan.config import NUM_GRADES, GANConfig, TrainConfig, model_from_record
from fedgan.federation import keys
from fedgan.federation.local_data import local_data
from fedgan.models.dcgan import Discriminator
from fedgan.torchfile import load_torch_file
from fedgan.training.augment import augment_generator
from fedgan.training.checkpoint import prune_checkpoints
from fedgan.training.data import InMemory
from fedgan.training.device import resolve_device
from fedgan.training.loop import DiscriminatorSide
from fedgan.training.split import Judge

JUDGE, GRADES = keys.JUDGE, keys.GRADES
CURRENT = "current.pt"


def state_folder(config: Mapping[str, Any], context: Context, partition_id: int) -> Path:
    node = context.node_config
    if "data-dir" in node:
        if keys.NODE_STATE_DIR not in node:
            raise ValueError(
                "mdgan keeps this hospital's discriminator on its own disk: start the SuperNode with "
                '--node-config "data-dir=... state-dir=/a/private/folder"'
            )
        return Path(str(node[keys.NODE_STATE_DIR]))
    return Path(str(config[keys.HOSPITAL_STATE])) / f"hospital-{partition_id}"


def new_judge(
    model_config: GANConfig,
    config: TrainConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    start: Mapping[str, torch.Tensor] | None,
) -> Judge:
    """A hospital's judge from the run's starting discriminator weights (None: loaded next)."""
    discriminator = Discriminator(model_config).to(resolve_device("auto"))
    if start is not None:
        discriminator.load_state_dict(dict(start))
    optimiser = torch.optim.Adam(
        discriminator.parameters(), lr=config.lr_discriminator, betas=(config.beta1, config.beta2)
    )
    if config.private:
        raise ValueError("mdgan does not run DP-SGD on the hospitals' discriminators yet (see docs/federation.md)")
    return Judge(
        DiscriminatorSide(discriminator, optimiser),
        images,
        labels,
        config,
        augment_generator(config.seed),
        conditional=model_config.conditional,
    )


def save_judge(folder: Path, judge: Judge, position: tuple[int, int], keep: int, snapshot: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(
        {
            "discriminator": judge.side.discriminator.state_dict(),
            "optimiser": judge.side.optimiser.state_dict(),
            "augment": judge.augment.get_state(),
            "epoch": judge.epoch,
            "cursor": judge.cursor,
            "steps": judge.steps,
            "grade_cursor": torch.tensor([judge.grade_cursor.get(g, 0) for g in range(NUM_GRADES)]),
            "position": list(position),
        },
        buffer,
    )
    # a mid-round state need not survive a power loss: a resumed federation restarts the round from the
    # last round's snapshot, so only that one is synced to disk
    write_bytes_atomic(folder / CURRENT, buffer.getvalue(), durable=snapshot)
    if snapshot:
        write_bytes_atomic(folder / f"round-{position[0]:04d}.pt", buffer.getvalue())
        prune_checkpoints(folder, "round", keep)


def load_judge(path: Path, judge: Judge, round_number: int, exchange: int) -> None:
    """Continue from `path`, which must hold the state just before (round_number, exchange), or
    at a round's start any earlier state: a hospital left out of rounds (late, failed) rejoins
    with the discriminator it had, while one ahead of the server (which resumed from an older
    checkpoint) must not go on with steps the server has not taken."""
    data = load_torch_file(path, "hospital state")
    found = tuple(data["position"])
    if found != (round_number, exchange - 1) and not (exchange == 0 and found[0] < round_number):
        expected = (round_number, exchange - 1) if exchange else (round_number - 1, "last")
        raise ValueError(
            f"{path}: this hospital's discriminator is at round/exchange {tuple(data['position'])}, "
            f"the server continues from {expected}"
        )
    judge.side.discriminator.load_state_dict(data["discriminator"])
    judge.side.optimiser.load_state_dict(data["optimiser"])
    judge.augment.set_state(data["augment"])
    judge.epoch, judge.cursor, judge.steps = int(data["epoch"]), int(data["cursor"]), int(data["steps"])
    judge.grade_cursor = {g: int(n) for g, n in enumerate(data["grade_cursor"].tolist()) if n}


#: this process's judges by state folder, with the (round, exchange) each has completed, so
#: consecutive exchanges skip reading the file they just wrote; where one process serves every
#: hospital (`keys.IN_MEMORY`), they skip writing it too, and only each round's snapshot reaches the disk
JUDGES: dict[Path, tuple[tuple[int, int], Judge]] = {}


def held_images(
    config: Mapping[str, Any], context: Context, train_config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """This hospital's images in memory, whatever the run's budget: its discriminator draws real
    images grade by grade at random, which a stream cannot serve."""
    data, partition_id = local_data(config, context, train_config, memory_mb=math.inf)
    assert isinstance(data, InMemory)
    return data.images, data.grades, partition_id


def judge_for(
    config: Mapping[str, Any], context: Context, train_config: TrainConfig, starting: Mapping[str, torch.Tensor]
) -> tuple[Judge, Path, int]:
    model_config = model_from_record(json.loads(str(config[keys.MODEL_CONFIG])))
    assert isinstance(model_config, GANConfig), "mdgan runs a GAN (simulate.federate refuses a DDPM)"
    images, labels, partition_id = held_images(config, context, train_config)
    folder = state_folder(config, context, partition_id)
    round_number, exchange = int(config[keys.GLOBAL_ROUND]), int(config[keys.EXCHANGE])
    previous = (round_number, exchange - 1)
    cached = JUDGES.get(folder)
    if cached is not None and cached[0] == previous:
        return cached[1], folder, partition_id
    own = dataclasses.replace(
        train_config, seed=train_config.seed * 1_000_003 + partition_id
    )  # this hospital's order and draws
    if starting:  # the run's first exchange: the server's starting discriminator
        return new_judge(model_config, own, images, labels, starting), folder, partition_id
    last_round = folder / f"round-{round_number - 1:04d}.pt"
    if cached is not None and exchange == 0 and cached[0][0] < round_number and not last_round.exists():
        return cached[1], folder, partition_id  # left out of the end of a round: from the last exchange it judged
    judge = new_judge(model_config, own, images, labels, None)
    path = folder / CURRENT if exchange > 0 else last_round
    if not path.exists() and exchange == 0 and (folder / CURRENT).exists():
        path = folder / CURRENT  # left out of the end of a round (late or failed): from the last exchange it judged
    if not path.exists():
        raise ValueError(
            f"{path}: this hospital holds no discriminator to continue from (state lost, or it joined mid-run)"
        )
    load_judge(path, judge, round_number, exchange)
    return judge, folder, partition_id


def judge(msg: Message, context: Context) -> Message:
    """One exchange: D steps against the server's fakes, step by step; the gradients back."""
    started = time.perf_counter()
    config = msg.content[keys.CONFIG]
    if keys.THREADS in config:
        torch.set_num_threads(int(config[keys.THREADS]))
    arrays = msg.content[keys.ARRAYS]
    starting = {
        k[len(keys.DISCRIMINATOR_PREFIX) :]: arrays[k].numpy()
        for k in arrays
        if k.startswith(keys.DISCRIMINATOR_PREFIX)
    }
    train_config = TrainConfig(**json.loads(str(config[keys.TRAIN_CONFIG])))
    hospital, folder, partition_id = judge_for(
        config, context, train_config, {k: torch.from_numpy(v) for k, v in starting.items()}
    )
    JUDGES.pop(folder, None)  # until this exchange succeeds: a failed one may leave its judge half-updated
    fakes = torch.from_numpy(arrays[keys.FAKES].numpy())
    grades = torch.from_numpy(arrays[keys.FAKE_GRADES].numpy()).long()
    steps = arrays[keys.STEP_INDEX].numpy()
    gradients = torch.zeros_like(fakes)
    stats = []
    for step in np.unique(steps):
        chosen = torch.from_numpy(np.flatnonzero(steps == step))
        gradients[chosen], step_stats = hospital.judge(fakes[chosen], grades[chosen])
        stats.append(step_stats)
    if not all(s.finite() for s in stats):
        raise RuntimeError(f"hospital {partition_id}: its discriminator diverged")
    position = (int(config[keys.GLOBAL_ROUND]), int(config[keys.EXCHANGE]))
    snapshot = bool(config[keys.LAST_EXCHANGE])
    # In one process the next exchange finds the state in JUDGES. The run's first exchange is written
    # all the same: a hospital whose worker dies in round 1 then has a discriminator to rejoin with.
    if snapshot or starting or keys.IN_MEMORY not in config:
        save_judge(folder, hospital, position, train_config.keep_checkpoints, snapshot)
    JUDGES[folder] = (position, hospital)
    metrics = {
        keys.PARTITION_ID: partition_id,
        keys.STEPS: len(stats),
        keys.SECONDS: time.perf_counter() - started,
        keys.D_LOSS: float(np.mean([s.d_loss for s in stats])) if stats else 0.0,
        keys.G_LOSS: float(np.mean([s.g_loss for s in stats])) if stats else 0.0,
    }
    return Message(
        content=RecordDict(
            {keys.ARRAYS: ArrayRecord({keys.GRADIENTS: Array(gradients.numpy())}), keys.METRICS: MetricRecord(metrics)}
        ),
        reply_to=msg,
    )


def grades(msg: Message, context: Context) -> Message:
    """The counts the server weights each grade's judges by (also in every round's metrics)."""
    config = msg.content[keys.CONFIG]
    _, labels, partition_id = held_images(config, context, TrainConfig(**json.loads(str(config[keys.TRAIN_CONFIG]))))
    counts = {keys.GRADE_COUNT.format(g): int((labels == g).sum()) for g in range(NUM_GRADES)}
    return Message(
        content=RecordDict(
            {keys.METRICS: MetricRecord({keys.PARTITION_ID: partition_id, keys.NUM_EXAMPLES: len(labels), **counts})}
        ),
        reply_to=msg,
    )
