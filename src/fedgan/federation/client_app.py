"""The ClientApp: what runs inside each hospital.

It receives the global generator and discriminator, trains them on its own data only with the
shared local loop (`fedgan.training.loop`) for the configured local epochs, and replies with both
networks and its metrics. No image leaves the hospital: only weights travel. Under SecAgg+ the
same training runs inside Flower's `secaggplus_mod`, and only a masked update leaves.

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
from collections.abc import Mapping
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS as SECAGG_CONFIGS
from torch import nn

from fedgan.config import NUM_GRADES, DiffusionConfig, TrainConfig, model_from_record
from fedgan.federation import keys, split_client, wire
from fedgan.federation.local_data import local_data
from fedgan.federation.secure import clipped_update
from fedgan.federation.weights import global_weights, load_global_weights
from fedgan.models.dcgan import build_models
from fedgan.models.ddpm import Denoiser
from fedgan.training.augment import augment_generator
from fedgan.training.device import resolve_device
from fedgan.training.diffusion import state_around
from fedgan.training.loop import GANState, TrainingState, make_ema, make_optimisers, noise_generator, train_epoch
from fedgan.training.privacy import attach_privacy
from fedgan.training.proximal import add_proximal_term
from fedgan.training.run import private_steps_per_epoch

app = ClientApp()
app.train(split_client.JUDGE)(split_client.judge)  # mdgan: this hospital's discriminator judges the server's images
app.query(split_client.GRADES)(split_client.grades)


@functools.lru_cache(maxsize=2)
def networks(model_record_json: str, device: str) -> tuple[nn.Module, ...]:
    """Built once per process: every round overwrites all their float state with the global model,
    so rebuilding (and re-initialising 25 M parameters) each round would be wasted time."""
    model_config = model_from_record(json.loads(model_record_json))
    if isinstance(model_config, DiffusionConfig):
        return (Denoiser(model_config).to(device),)
    return tuple(network.to(device) for network in build_models(model_config))


def local_state(config: Mapping[str, Any], seed: int) -> TrainingState:
    """This process's networks with fresh optimisers (fresh Adam each round, as the paper), a
    moving average and the round's own noise and augmentation streams; weights still unset."""
    model_config = model_from_record(json.loads(str(config[keys.MODEL_CONFIG])))
    train_config = dataclasses.replace(TrainConfig(**json.loads(str(config[keys.TRAIN_CONFIG]))), seed=seed)
    built = networks(str(config[keys.MODEL_CONFIG]), str(resolve_device("auto")))
    if isinstance(model_config, DiffusionConfig):
        (denoiser,) = built
        return state_around(denoiser, model_config, train_config)
    generator, discriminator = built
    opt_generator, opt_discriminator = make_optimisers(generator, discriminator, train_config)
    return GANState(
        model_config,
        generator,
        discriminator,
        opt_generator,
        opt_discriminator,
        noise_generator(seed),
        generator_ema=make_ema(generator, train_config),
        augment=augment_generator(seed),
    )


def train_locally(
    start: dict[str, torch.Tensor], config: Mapping[str, Any], context: Context
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the global networks `start` on this hospital's data; return the new weights and metrics."""
    started = time.perf_counter()
    if keys.THREADS in config:
        torch.set_num_threads(int(config[keys.THREADS]))
    train_config = TrainConfig(**json.loads(str(config[keys.TRAIN_CONFIG])))
    data, partition_id = local_data(config, context, train_config)
    if data.count < 2:  # batch statistics of one image are meaningless; better left out than harmful
        raise ValueError(f"hospital {partition_id} has {data.count} training image(s); at least 2 are needed")
    round_number = int(config[keys.GLOBAL_ROUND])
    # Each (round, hospital) draws its own data order, noise and augmentation, reproducibly.
    local = dataclasses.replace(train_config, seed=train_config.seed * 1_000_003 + round_number * 1009 + partition_id)
    state = local_state(config, local.seed)
    load_global_weights(state, start)
    if float(config.get(keys.PROXIMAL_MU, 0.0)) > 0:  # fedprox: the optimisers are this round's, so are the hooks
        for optimiser in state.optimisers().values():
            add_proximal_term(optimiser, float(config[keys.PROXIMAL_MU]))
    per_round = train_config.epochs * private_steps_per_epoch(train_config, data.count)
    if state.generator_ema is not None:  # the average's warm-up continues across rounds instead of restarting
        state.generator_ema.n_averaged.fill_((round_number - 1) * per_round // train_config.d_steps)
    attach_privacy(
        state, train_config, data.count, int(config.get(keys.ROUNDS, 1)) * per_round
    )  # fresh each round: the server keeps the history
    history = []
    try:
        for _ in range(train_config.epochs):
            history += train_epoch(state, data, local)
    finally:
        if state.private:
            state.private.close()  # the cached networks must not keep this round's hooks
    d_loss = float(np.mean([s.d_loss for s in history])) if history else math.nan
    g_loss = float(np.mean([s.g_loss for s in history])) if history else math.nan
    if not (history and all(s.finite() for s in history)):
        raise RuntimeError(
            f"hospital {partition_id}: training diverged or ran no step (D loss {d_loss}, G loss {g_loss})"
        )
    disclose = str(config.get(keys.DISCLOSE, "")).split(",")  # beyond weight and id, only what the federation asked for
    metrics = {
        keys.NUM_EXAMPLES: data.count,
        keys.UNIT_WEIGHT: 1,
        keys.PARTITION_ID: partition_id,
        **(
            {
                keys.D_LOSS: d_loss,
                keys.G_LOSS: g_loss,
                keys.STEPS: len(history),
                keys.SECONDS: time.perf_counter() - started,
            }
            if "losses" in disclose
            else {}
        ),
        **(
            {keys.GRADE_COUNT.format(grade): int((data.labels == grade).sum()) for grade in range(NUM_GRADES)}
            if "grades" in disclose
            else {}
        ),
    }
    if state.private:
        metrics |= {
            keys.DP_NOISE: state.private.noise,
            keys.DP_RATE: state.private.rate,
            keys.DP_STEPS: len(history) * train_config.d_steps,
        }
    return global_weights(state), metrics


def secure_train(msg: Message, context: Context) -> Message:
    """One hospital's training inside SecAgg+ (Flower's legacy FitIns/FitRes messages).

    It returns the clipped *update* (local minus global weights), not the weights: updates are
    small, so they fit SecAgg+'s fixed clipping range and lose less to its quantisation."""
    fit = compat.recorddict_to_fitins(msg.content, keep_input=True)
    names = list(global_weights(local_state(fit.config, 0)))
    start = dict(zip(names, (torch.from_numpy(a) for a in parameters_to_ndarrays(fit.parameters)), strict=True))
    trained, metrics = train_locally(start, fit.config, context)
    update, clipped, largest = clipped_update(trained, start, float(fit.config[keys.SECAGG_CLIP]))
    weight = int(metrics[keys.WEIGHTINGS[str(fit.config[keys.WEIGHTING])]])
    if weight > float(fit.config[keys.SECAGG_MAX_WEIGHT]):  # its values would overflow the protocol's range
        raise ValueError(
            f"hospital {metrics[keys.PARTITION_ID]} weighs {weight}, above the federation's SecAgg+ "
            f"max-weight {fit.config[keys.SECAGG_MAX_WEIGHT]}: raise it on the server"
        )
    metrics |= {keys.CLIPPED: clipped, keys.LARGEST_UPDATE: largest}
    reply = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), weight, metrics)
    return Message(content=compat.fitres_to_recorddict(reply, keep_input=False), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    if SECAGG_CONFIGS in msg.content.config_records:  # a stage of SecAgg+: the mod runs the protocol
        return secaggplus_mod(msg, context, secure_train)
    start = msg.content[keys.ARRAYS].to_torch_state_dict()
    config = msg.content[keys.CONFIG]
    weights, metrics = train_locally(start, config, context)
    sent = wire.encode(weights, start, str(config.get(keys.WIRE, wire.FP32)))
    return Message(
        content=RecordDict({keys.ARRAYS: ArrayRecord(sent), keys.METRICS: MetricRecord(metrics)}), reply_to=msg
    )
