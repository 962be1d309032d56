"""The ServerApp: FedAvg over the generator and the discriminator, a checkpoint and grid per round.

Aggregation is example-weighted FedAvg by default (each hospital counts in proportion to its
images). The paper used an unweighted mean (`weighting="unweighted"`): with label-split data the
grade-0 hospitals hold most images, so weighting lets them dominate the model, while the
unweighted mean gives each hospital's grades an equal say. We default to example weighting
because it is FedAvg's estimator of the centralised gradient and keeps a 1-image hospital from
moving the model as much as a 10,000-image one; choose per study.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedgan.config import TrainConfig
from fedgan.federation import keys
from fedgan.federation.weights import load_global_weights
from fedgan.models.dcgan import GANConfig
from fedgan.training.checkpoint import save_checkpoint
from fedgan.training.loop import new_state
from fedgan.training.samples import save_samples

log = logging.getLogger(__name__)

WEIGHTINGS = {"examples": keys.NUM_EXAMPLES, "unweighted": keys.UNIT_WEIGHT}


@dataclasses.dataclass(frozen=True)
class FederationSettings:
    store: Path
    run: Path
    clients: int
    partition: str
    rounds: int  # total rounds of the run
    model_config: GANConfig
    train_config: TrainConfig  # `epochs` = local epochs per round
    alpha: float = 0.5
    fraction: float = 1.0  # share of hospitals sampled each round
    weighting: str = "examples"
    min_successful: int = 1  # a round fails if fewer hospitals return usable models
    client_cpus: int = 0  # simulation: CPU cores per virtual hospital (0: unset, deployment)

    def round_config(self) -> ConfigRecord:
        return ConfigRecord({
            keys.STORE: str(self.store.resolve()), keys.PARTITION: self.partition, keys.NUM_CLIENTS: self.clients,
            keys.ALPHA: self.alpha, keys.MODEL_CONFIG: json.dumps(dataclasses.asdict(self.model_config)),
            keys.TRAIN_CONFIG: json.dumps(dataclasses.asdict(self.train_config)),
            **({keys.THREADS: self.client_cpus} if self.client_cpus else {}),
        })


class RoundRecorder:
    """Writes metrics.jsonl lines, per-round checkpoints and sample grids into the run folder."""

    def __init__(self, settings: FederationSettings, start_round: int) -> None:
        self.settings = settings
        self.start_round = start_round
        self.round_started = time.perf_counter()
        self.state = new_state(settings.model_config, settings.train_config, torch.device("cpu"))
        self.pending: dict[str, Any] = {}

    def write(self, line: dict[str, Any]) -> None:
        with open(self.settings.run / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    def clients(self, global_round: int, valid: list[Message], failed: list[Message], model_bytes: int) -> None:
        for reply in valid:
            m = next(iter(reply.content.metric_records.values()))
            self.write({"round": global_round, "client": int(m[keys.PARTITION_ID]), "node": reply.metadata.src_node_id,
                        "examples": int(m[keys.NUM_EXAMPLES]), "steps": int(m[keys.STEPS]), "d_loss": m[keys.D_LOSS],
                        "g_loss": m[keys.G_LOSS], "seconds": round(float(m[keys.SECONDS]), 3), "grades": list(m[keys.GRADE_COUNTS]),
                        "bytes_received": model_bytes, "bytes_sent": model_bytes})
        for reply in failed:
            log.warning("round %d: hospital on node %d left out: %s", global_round, reply.metadata.src_node_id, reply.error.reason)
            self.write({"round": global_round, "node": reply.metadata.src_node_id, "failed": reply.error.reason})
        losses = [next(iter(r.content.metric_records.values())) for r in valid]
        self.pending = {"clients": len(valid), "failed": len(failed),
                        "d_loss": float(np.mean([m[keys.D_LOSS] for m in losses])) if losses else None,
                        "g_loss": float(np.mean([m[keys.G_LOSS] for m in losses])) if losses else None}

    def end_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower's `evaluate_fn`: called with the initial model (round 0) and after each round."""
        if server_round == 0:
            self.round_started = time.perf_counter()
            return None
        global_round = self.start_round + server_round
        load_global_weights(self.state, arrays.to_torch_state_dict())
        self.state.epoch = global_round
        save_samples(self.state, self.settings.run / "samples" / f"round-{global_round:04d}.png",
                     self.settings.train_config.sample_count, self.settings.train_config.seed)
        save_checkpoint(self.state, self.settings.train_config, self.settings.run / "checkpoints", f"round-{global_round:04d}",
                        extra={"round": global_round, "rounds": self.settings.rounds})
        seconds = time.perf_counter() - self.round_started
        self.write({"round": global_round, "aggregate": True, "seconds": round(seconds, 3), **self.pending})
        log.info("round %d/%d done in %.1f s: %s", global_round, self.settings.rounds, seconds, self.pending)
        self.round_started = time.perf_counter()
        return None


class GANFedAvg(FedAvg):
    """FedAvg that records every hospital's reply, drops failed ones and enforces a minimum."""

    def __init__(self, settings: FederationSettings, recorder: RoundRecorder) -> None:
        # min_train_nodes is the number to sample: FedAvg otherwise derives it from the nodes
        # registered at that instant, which right after start-up can be fewer than all.
        super().__init__(fraction_train=settings.fraction, fraction_evaluate=0.0,
                         min_train_nodes=max(1, round(settings.fraction * settings.clients)), min_available_nodes=settings.clients, weighted_by_key=WEIGHTINGS[settings.weighting],
                         arrayrecord_key=keys.ARRAYS, configrecord_key=keys.CONFIG)
        self.settings = settings
        self.recorder = recorder

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        config[keys.GLOBAL_ROUND] = self.recorder.start_round + server_round
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        valid = [r for r in replies if not r.has_error()]
        failed = [r for r in replies if r.has_error()]
        global_round = self.recorder.start_round + server_round
        model_bytes = sum(a.numpy().nbytes for a in next(iter(valid[0].content.array_records.values())).values()) if valid else 0
        self.recorder.clients(global_round, valid, failed, model_bytes)
        if len(valid) < self.settings.min_successful:
            raise RuntimeError(f"round {global_round}: only {len(valid)} hospital(s) returned a usable model, "
                               f"{self.settings.min_successful} required")
        return super().aggregate_train(server_round, valid)


def make_server_app(settings: FederationSettings, initial: ArrayRecord, start_round: int) -> ServerApp:
    """A ServerApp bound to one run's settings (the simulation engine runs it in this process)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        recorder = RoundRecorder(settings, start_round)
        strategy = GANFedAvg(settings, recorder)
        strategy.start(grid=grid, initial_arrays=initial, num_rounds=settings.rounds - start_round,
                       train_config=settings.round_config(), evaluate_fn=recorder.end_round)

    return app
