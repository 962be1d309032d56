"""The ClientApp: what runs inside each hospital.

It receives the global generator and discriminator, trains them on its own data only with the
shared local loop (`fedgan.training.loop`) for the configured local epochs, and replies with both
networks and its metrics. No image leaves the hospital: only weights travel.

Which data is "its own": in simulation, partition `partition-id` of the store named in the
round's config (the engine sets `partition-id`/`num-partitions` per virtual node); in deployment,
the store at `data-dir` in the SuperNode's node config.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedgan.config import NUM_GRADES, TrainConfig
from fedgan.data.partition import partition
from fedgan.data.store import Store
from fedgan.federation import keys
from fedgan.federation.weights import global_weights, load_global_weights
from fedgan.models.dcgan import Discriminator, GANConfig, Generator, build_models
from fedgan.training.device import resolve_device
from fedgan.training.loop import GANState, make_optimisers, noise_generator, train_epoch

app = ClientApp()


@functools.lru_cache(maxsize=4)
def hospital_data(store: str, kind: str, num_clients: int, partition_id: int, seed: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """This hospital's share of the store's training split (cached across rounds in one process)."""
    data = Store(Path(store))
    indices = partition(data.labels("train"), num_clients, kind, seed, alpha=alpha)[partition_id]
    images, labels = data.load("train", indices)
    return torch.from_numpy(images), torch.from_numpy(labels)


@functools.lru_cache(maxsize=2)
def networks(model_config_json: str, device: str) -> tuple[Generator, Discriminator]:
    """Built once per process: every round overwrites all their float state with the global model,
    so rebuilding (and re-initialising 25 M parameters) each round would be wasted time."""
    generator, discriminator = build_models(GANConfig(**json.loads(model_config_json)))
    return generator.to(device), discriminator.to(device)


def local_data(config: ConfigRecord, context: Context, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    node = context.node_config
    if "data-dir" in node:  # deployment: the SuperNode's own store, all of it
        images, labels = hospital_data(str(node["data-dir"]), "iid", 1, 0, seed, 1.0)
        return images, labels, int(node.get(keys.NODE_PARTITION_ID, 0))
    partition_id = int(node[keys.NODE_PARTITION_ID])
    images, labels = hospital_data(str(config[keys.STORE]), str(config[keys.PARTITION]), int(config[keys.NUM_CLIENTS]),
                                   partition_id, seed, float(config[keys.ALPHA]))
    return images, labels, partition_id


def train_locally(arrays: ArrayRecord, config: ConfigRecord, context: Context) -> tuple[ArrayRecord, MetricRecord]:
    started = time.perf_counter()
    if keys.THREADS in config:
        torch.set_num_threads(int(config[keys.THREADS]))
    model_config = GANConfig(**json.loads(str(config[keys.MODEL_CONFIG])))
    train_config = TrainConfig(**json.loads(str(config[keys.TRAIN_CONFIG])))
    images, labels, partition_id = local_data(config, context, train_config.seed)
    if len(images) < 2:  # batch statistics of one image are meaningless; better left out than harmful
        raise ValueError(f"hospital {partition_id} has {len(images)} training image(s); at least 2 are needed")
    round_number = int(config[keys.GLOBAL_ROUND])
    # Each (round, hospital) draws its own data order and noise, reproducibly.
    local = dataclasses.replace(train_config, seed=train_config.seed * 1_000_003 + round_number * 1009 + partition_id)
    generator, discriminator = networks(str(config[keys.MODEL_CONFIG]), str(resolve_device("auto")))
    opt_generator, opt_discriminator = make_optimisers(generator, discriminator, local)  # fresh Adam each round, as the paper
    state = GANState(model_config, generator, discriminator, opt_generator, opt_discriminator, noise_generator(local.seed))
    load_global_weights(state, arrays.to_torch_state_dict())
    history = []
    for _ in range(train_config.epochs):
        history += train_epoch(state, images, labels, local)
    d_loss = float(np.mean([s.d_loss for s in history])) if history else math.nan
    g_loss = float(np.mean([s.g_loss for s in history])) if history else math.nan
    if not (history and all(s.finite() for s in history)):
        raise RuntimeError(f"hospital {partition_id}: training diverged or ran no step (D loss {d_loss}, G loss {g_loss})")
    metrics = MetricRecord({
        keys.NUM_EXAMPLES: len(images), keys.UNIT_WEIGHT: 1, keys.PARTITION_ID: partition_id,
        keys.D_LOSS: d_loss, keys.G_LOSS: g_loss, keys.STEPS: len(history), keys.SECONDS: time.perf_counter() - started,
        keys.GRADE_COUNTS: [int((labels == grade).sum()) for grade in range(NUM_GRADES)],
    })
    return ArrayRecord(global_weights(state)), metrics


@app.train()
def train(msg: Message, context: Context) -> Message:
    arrays, metrics = train_locally(msg.content[keys.ARRAYS], msg.content[keys.CONFIG], context)
    return Message(content=RecordDict({keys.ARRAYS: arrays, keys.METRICS: metrics}), reply_to=msg)
