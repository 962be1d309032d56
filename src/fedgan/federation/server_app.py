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
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, Strategy

from fedgan.config import NUM_GRADES, TrainConfig
from fedgan.federation import keys
from fedgan.federation.failures import short_reason
from fedgan.federation.secure import SecAggSettings, run_secure
from fedgan.federation.weights import load_global_weights
from fedgan.models.dcgan import GANConfig
from fedgan.training.checkpoint import BEST, prune_checkpoints, save_checkpoint
from fedgan.training.loop import new_state
from fedgan.training.privacy import History, epsilon
from fedgan.training.samples import save_samples

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClientDP:
    """Client-level DP (Flower's server-side fixed clipping): each hospital's whole update is
    clipped to `clip` (L2 over both networks) and the mean gets Gaussian noise of `noise x clip /
    hospitals`. Protects whether a hospital took part, not single patients (see README)."""

    noise: float
    clip: float


@dataclasses.dataclass(frozen=True)
class FederationSettings:
    store: Path | None  # simulation: the store the hospitals' partitions come from; deployment: None
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
    secagg: SecAggSettings | None = None  # None: plain FedAvg, the server sees each hospital's model
    client_dp: ClientDP | None = None

    def round_config(self) -> ConfigRecord:
        return ConfigRecord({
            keys.PARTITION: self.partition, keys.NUM_CLIENTS: self.clients, keys.ALPHA: self.alpha, keys.WEIGHTING: self.weighting,
            keys.MODEL_CONFIG: json.dumps(dataclasses.asdict(self.model_config)),
            keys.TRAIN_CONFIG: json.dumps(dataclasses.asdict(self.train_config)), keys.ROUNDS: self.rounds,
            **({keys.STORE: str(self.store.resolve())} if self.store else {}),
            **({keys.THREADS: self.client_cpus} if self.client_cpus else {}),
            **({keys.SECAGG_CLIP: self.secagg.clip, keys.SECAGG_MAX_WEIGHT: self.secagg.max_weight} if self.secagg else {}),
        })


class RoundRecorder:
    """Writes metrics.jsonl lines, per-round checkpoints and sample grids into the run folder."""

    def __init__(self, settings: FederationSettings, start_round: int, privacy: dict[str, History] | None = None) -> None:
        self.settings = settings
        self.start_round = start_round
        self.privacy: dict[str, History] = {k: [tuple(h) for h in v] for k, v in (privacy or {}).items()}  # per hospital, across rounds
        self.round_started = time.perf_counter()
        self.state = new_state(settings.model_config, settings.train_config, torch.device("cpu"))
        self.pending: dict[str, Any] = {}
        self.probe = None  # quality every round, in simulation (the coordinator of a deployment holds no images)
        if settings.store is not None and settings.train_config.eval_every:
            from fedgan.evaluation.probe import QualityProbe  # imports the evaluator only for runs that use it

            self.probe = QualityProbe.for_store(settings.store, count=settings.train_config.eval_count, seed=settings.train_config.seed)
        self.best_kid = best_kid(settings.run)

    def write(self, line: dict[str, Any]) -> None:
        with open(self.settings.run / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    def clients(self, global_round: int, valid: list[tuple[int, Mapping[str, Any]]], failed: list[tuple[int | None, str]],
                bytes_received: int, bytes_sent: int) -> None:
        """One line per hospital of the round: (node id, metrics) of those that succeeded, (node id, reason) of the rest."""
        for node, m in valid:
            line = {"round": global_round, "client": int(m[keys.PARTITION_ID]), "node": node,
                    "examples": int(m[keys.NUM_EXAMPLES]), "steps": int(m[keys.STEPS]), "d_loss": m[keys.D_LOSS],
                    "g_loss": m[keys.G_LOSS], "seconds": round(float(m[keys.SECONDS]), 3), "grades": [int(m[keys.GRADE_COUNT.format(g)]) for g in range(NUM_GRADES)],
                    "bytes_received": bytes_received, "bytes_sent": bytes_sent}
            if keys.DP_STEPS in m:  # each hospital's epsilon over every round it took part in
                spent = self.privacy.setdefault(str(m[keys.PARTITION_ID]), [])
                spent.append((float(m[keys.DP_NOISE]), float(m[keys.DP_RATE]), int(m[keys.DP_STEPS])))
                line["epsilon"] = round(epsilon(spent, self.settings.train_config.dp_delta), 4)
            if keys.CLIPPED in m:
                line |= {"clipped": m[keys.CLIPPED], "largest_update": m[keys.LARGEST_UPDATE]}
                if m[keys.CLIPPED]:
                    log.warning("round %d: hospital %s clipped %.2g%% of its update to the SecAgg+ range (largest %.3g): raise "
                                "--secagg-clip", global_round, m[keys.PARTITION_ID], 100 * m[keys.CLIPPED], m[keys.LARGEST_UPDATE])
            self.write(line)
        for node, reason in failed:
            log.warning("round %d: hospital on node %s left out: %s", global_round, node, reason)
            self.write({"round": global_round, "node": node, "failed": reason})
        spent = [epsilon(h, self.settings.train_config.dp_delta) for h in self.privacy.values()]
        self.pending = {"clients": len(valid), "failed": len(failed), **({"epsilon": round(max(spent), 4)} if spent else {}),
                        "d_loss": float(np.mean([m[keys.D_LOSS] for _, m in valid])) if valid else None,
                        "g_loss": float(np.mean([m[keys.G_LOSS] for _, m in valid])) if valid else None}
        if self.settings.client_dp:  # every round is one Gaussian mechanism over all hospitals (no sampling amplification)
            client_dp, delta = self.settings.client_dp, self.settings.train_config.dp_delta
            self.pending["client_epsilon"] = round(epsilon([(client_dp.noise, 1.0, global_round)], delta), 4)

    def end_round(self, server_round: int, weights: Mapping[str, torch.Tensor]) -> None:
        """Called with the initial model (round 0) and after each round."""
        if server_round == 0:
            self.round_started = time.perf_counter()
            return
        global_round = self.start_round + server_round
        load_global_weights(self.state, dict(weights))
        self.state.epoch = global_round
        save_samples(self.state, self.settings.run / "samples" / f"round-{global_round:04d}.png",
                     self.settings.train_config.sample_count, self.settings.train_config.seed)
        save_checkpoint(self.state, self.settings.train_config, self.settings.run / "checkpoints", f"round-{global_round:04d}",
                        extra={"round": global_round, "rounds": self.settings.rounds,
                               "privacy": {k: [list(h) for h in v] for k, v in self.privacy.items()}})
        prune_checkpoints(self.settings.run / "checkpoints", "round", self.settings.train_config.keep_checkpoints)
        seconds = time.perf_counter() - self.round_started
        if self.probe is not None:
            quality = self.probe(self.state)
            self.pending |= quality
            if self.best_kid is None or quality["kid"] < self.best_kid:
                self.best_kid = quality["kid"]
                save_checkpoint(self.state, self.settings.train_config, self.settings.run / "checkpoints", BEST,
                                extra={"round": global_round, "rounds": self.settings.rounds, "kid": quality["kid"]}, latest=False)
        self.write({"round": global_round, "aggregate": True, "seconds": round(seconds, 3), **self.pending})
        log.info("round %d/%d done in %.1f s: %s", global_round, self.settings.rounds, seconds, self.pending)
        self.round_started = time.perf_counter()


def best_kid(run: Path) -> float | None:
    """The lowest per-round KID recorded so far in `run` (a resumed federation keeps its best)."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return None
    values = [line["kid"] for line in map(json.loads, path.read_text().splitlines()) if line.get("aggregate") and "kid" in line]
    return min(values) if values else None


class GANFedAvg(FedAvg):
    """FedAvg that records every hospital's reply, drops failed ones and enforces a minimum."""

    def __init__(self, settings: FederationSettings, recorder: RoundRecorder) -> None:
        # min_train_nodes is the number to sample: FedAvg otherwise derives it from the nodes
        # registered at that instant, which right after start-up can be fewer than all.
        super().__init__(fraction_train=settings.fraction, fraction_evaluate=0.0,
                         min_train_nodes=max(1, round(settings.fraction * settings.clients)), min_available_nodes=settings.clients,
                         weighted_by_key=keys.WEIGHTINGS[settings.weighting],
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
        self.recorder.clients(global_round, [(r.metadata.src_node_id, next(iter(r.content.metric_records.values()))) for r in valid],
                              [(r.metadata.src_node_id, short_reason(r.error.reason)) for r in failed], model_bytes, model_bytes)
        if len(valid) < self.settings.min_successful:
            raise RuntimeError(f"round {global_round}: only {len(valid)} hospital(s) returned a usable model, "
                               f"{self.settings.min_successful} required")
        return super().aggregate_train(server_round, valid)


def run_rounds(grid: Grid, context: Context, settings: FederationSettings, initial: OrderedDict[str, torch.Tensor], start_round: int,
               privacy: dict[str, History] | None = None) -> None:
    """The ServerApp's work: rounds start_round+1 .. settings.rounds, with or without SecAgg+;
    `privacy` is each hospital's DP history from the rounds before a resume."""
    recorder = RoundRecorder(settings, start_round, privacy)
    if settings.secagg:
        run_secure(grid, context, settings, recorder, initial)
        return

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        recorder.end_round(server_round, arrays.to_torch_state_dict())
        return None

    strategy: Strategy = GANFedAvg(settings, recorder)
    if settings.client_dp:
        strategy = DifferentialPrivacyServerSideFixedClipping(strategy, noise_multiplier=settings.client_dp.noise,
                                                             clipping_norm=settings.client_dp.clip,
                                                             num_sampled_clients=max(1, round(settings.fraction * settings.clients)))
    strategy.start(grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=settings.rounds - start_round,
                   train_config=settings.round_config(), evaluate_fn=evaluate)


def make_server_app(settings: FederationSettings, initial: OrderedDict[str, torch.Tensor], start_round: int,
                    privacy: dict[str, History] | None = None) -> ServerApp:
    """A ServerApp bound to one run's settings (the simulation engine runs it in this process)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_rounds(grid, context, settings, initial, start_round, privacy)

    return app
