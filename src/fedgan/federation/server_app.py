"""The ServerApp: the configured algorithm over the hospitals, a checkpoint, grid and KID per round.

Weight-averaging algorithms (FedAvg and Flower's server optimisers, `fedgan.federation.algorithms`)
average the generator and the discriminator; `mdgan` keeps the generator here and the
discriminators at the hospitals (`fedgan.federation.split_server`).

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
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy

from fedgan.config import NUM_GRADES, AlgorithmConfig, TrainConfig
from fedgan.federation import keys
from fedgan.federation.algorithms import make_strategy, sampled_hospitals
from fedgan.federation.failures import RoundFailed
from fedgan.federation.nodes import connected_nodes
from fedgan.federation.secure import SecAggSettings, run_secure
from fedgan.federation.weights import load_global_weights
from fedgan.models.dcgan import GANConfig
from fedgan.training.checkpoint import BEST, prune_checkpoints, save_checkpoint
from fedgan.training.loop import new_state
from fedgan.training.privacy import History, epsilon
from fedgan.training.samples import save_samples

log = logging.getLogger(__name__)

SERVER_OPTIMISER = "server-optimiser"  # checkpoint extra: the server optimiser's state (momentum, Adam moments)


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
    algorithm: AlgorithmConfig = AlgorithmConfig()
    # The server's own image count per hospital id, which each reply's weight must match: the
    # partition's in simulation, the operator's registry in deployment (`federation.registry`).
    images: Mapping[int, int] | None = None
    round_timeout: float = 3600.0  # seconds a round (or a SecAgg+ stage) waits for replies; the late are left out
    # What hospitals reveal beyond their weight and id (`fedgan.config.DISCLOSURES`). Losses by
    # default, for the per-hospital curves; grade counts only when asked (mdgan always needs them).
    disclose: tuple[str, ...] = ("losses",)

    def disclosed(self) -> tuple[str, ...]:
        """What each hospital reveals to the coordinator in this federation, for the record and the report."""
        return tuple(sorted({*self.disclose, *(("grades",) if self.algorithm.name == "mdgan" else ())}))

    def round_config(self) -> ConfigRecord:
        return ConfigRecord(
            {
                keys.PARTITION: self.partition,
                keys.NUM_CLIENTS: self.clients,
                keys.ALPHA: self.alpha,
                keys.WEIGHTING: self.weighting,
                keys.MODEL_CONFIG: json.dumps(dataclasses.asdict(self.model_config)),
                keys.TRAIN_CONFIG: json.dumps(dataclasses.asdict(self.train_config)),
                keys.ROUNDS: self.rounds,
                keys.DISCLOSE: ",".join(self.disclosed()),
                **(
                    {
                        keys.STORE: str(self.store.resolve()),
                        keys.HOSPITAL_STATE: str((self.run / "hospitals").resolve()),
                    }
                    if self.store
                    else {}
                ),
                **({keys.THREADS: self.client_cpus} if self.client_cpus else {}),
                **({keys.PROXIMAL_MU: self.algorithm.proximal_mu} if self.algorithm.name == "fedprox" else {}),
                **(
                    {keys.SECAGG_CLIP: self.secagg.clip, keys.SECAGG_MAX_WEIGHT: self.secagg.max_weight}
                    if self.secagg
                    else {}
                ),
            }
        )


class RoundRecorder:
    """Writes metrics.jsonl lines, per-round checkpoints and sample grids into the run folder.

    A round's lines are written only after its checkpoint, so a round that fails or is killed
    leaves no trace that a resume would repeat. The one exception is the DP ledger
    (`privacy.jsonl`): a hospital's DP-SGD steps count from the moment its update reaches the
    server, whether or not the round is ever committed, so they are appended and synced first.
    """

    def __init__(self, settings: FederationSettings, start_round: int) -> None:
        self.settings = settings
        self.start_round = start_round
        self.privacy: dict[str, History] = read_ledger(settings.run)  # per hospital, across rounds and attempts
        self.lines: list[dict[str, Any]] = []  # the round's per-hospital lines, written once it is committed
        self.round_started = time.perf_counter()
        self.state = new_state(settings.model_config, settings.train_config, torch.device("cpu"))
        self.pending: dict[str, Any] = {}
        self.probe = None  # quality every round, in simulation (the coordinator of a deployment holds no images)
        if settings.store is not None and settings.train_config.eval_every:
            from fedgan.evaluation.probe import QualityProbe  # imports the evaluator only for runs that use it

            self.probe = QualityProbe.for_store(
                settings.store, count=settings.train_config.eval_count, seed=settings.train_config.seed
            )
        self.best_kid = best_kid(settings.run)
        self.extra: Callable[[], dict[str, Any]] = (
            dict  # more state for each round's checkpoint (the server optimiser's)
        )

    def write(self, *lines: dict[str, Any]) -> None:
        append_lines(self.settings.run / "metrics.jsonl", lines)

    def clients(
        self,
        global_round: int,
        valid: list[tuple[int, Mapping[str, Any]]],
        failed: list[tuple[int | None, str]],
        bytes_received: int,
        bytes_sent: int,
    ) -> None:
        """One line per hospital of the round: (node id, metrics) of those that succeeded, (node id,
        reason) of the rest; written when the round is committed (`end_round`)."""
        for node, m in valid:
            line = {
                "round": global_round,
                "client": int(m[keys.PARTITION_ID]),
                "node": node,
                "examples": int(m[keys.NUM_EXAMPLES]),
                **(
                    {
                        "steps": int(m[keys.STEPS]),
                        "d_loss": m[keys.D_LOSS],
                        "g_loss": m[keys.G_LOSS],
                        "seconds": round(float(m[keys.SECONDS]), 3),
                    }
                    if keys.D_LOSS in m
                    else {}
                ),
                **(
                    {"grades": [int(m[keys.GRADE_COUNT.format(g)]) for g in range(NUM_GRADES)]}
                    if keys.GRADE_COUNT.format(0) in m
                    else {}
                ),
                "bytes_received": int(m.get(keys.BYTES_RECEIVED, bytes_received)),
                "bytes_sent": int(m.get(keys.BYTES_SENT, bytes_sent)),
            }
            if keys.DP_STEPS in m:  # each hospital's epsilon over every round it took part in
                spent = self.privacy.setdefault(str(m[keys.PARTITION_ID]), [])
                spent.append((float(m[keys.DP_NOISE]), float(m[keys.DP_RATE]), int(m[keys.DP_STEPS])))
                append_lines(
                    self.settings.run / LEDGER,
                    [
                        {
                            "round": global_round,
                            "hospital": str(m[keys.PARTITION_ID]),
                            "noise": spent[-1][0],
                            "rate": spent[-1][1],
                            "steps": spent[-1][2],
                        }
                    ],
                )
                line["epsilon"] = round(epsilon(spent, self.settings.train_config.dp_delta), 4)
            if keys.CLIPPED in m:
                line |= {"clipped": m[keys.CLIPPED], "largest_update": m[keys.LARGEST_UPDATE]}
                if m[keys.CLIPPED]:
                    log.warning(
                        "round %d: hospital %s clipped %.2g%% of its update to the SecAgg+ range (largest %.3g): raise "
                        "--secagg-clip",
                        global_round,
                        m[keys.PARTITION_ID],
                        100 * m[keys.CLIPPED],
                        m[keys.LARGEST_UPDATE],
                    )
            self.lines.append(line)
        for node, reason in failed:
            log.warning("round %d: hospital on node %s left out: %s", global_round, node, reason)
            self.lines.append({"round": global_round, "node": node, "failed": reason})
        spent = [epsilon(h, self.settings.train_config.dp_delta) for h in self.privacy.values()]
        self.pending = {
            "clients": len(valid),
            "failed": len(failed),
            **({"epsilon": round(max(spent), 4)} if spent else {}),
            "d_loss": mean_of(keys.D_LOSS, [m for _, m in valid]),
            "g_loss": mean_of(keys.G_LOSS, [m for _, m in valid]),
        }
        if (
            self.settings.client_dp
        ):  # every round is one Gaussian mechanism over all hospitals (no sampling amplification)
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
        save_samples(
            self.state,
            self.settings.run / "samples" / f"round-{global_round:04d}.png",
            self.settings.train_config.sample_count,
            self.settings.train_config.seed,
        )
        save_checkpoint(
            self.state,
            self.settings.train_config,
            self.settings.run / "checkpoints",
            f"round-{global_round:04d}",
            extra={"round": global_round, "rounds": self.settings.rounds, **self.extra()},
        )
        prune_checkpoints(self.settings.run / "checkpoints", "round", self.settings.train_config.keep_checkpoints)
        seconds = time.perf_counter() - self.round_started
        if self.probe is not None:
            quality = self.probe(self.state)
            self.pending |= quality
            if self.best_kid is None or quality["kid"] < self.best_kid:
                self.best_kid = quality["kid"]
                save_checkpoint(
                    self.state,
                    self.settings.train_config,
                    self.settings.run / "checkpoints",
                    BEST,
                    extra={"round": global_round, "rounds": self.settings.rounds, "kid": quality["kid"]},
                    latest=False,
                )
        self.write(
            *self.lines, {"round": global_round, "aggregate": True, "seconds": round(seconds, 3), **self.pending}
        )
        self.lines = []
        log.info("round %d/%d done in %.1f s: %s", global_round, self.settings.rounds, seconds, self.pending)
        self.round_started = time.perf_counter()


def mean_of(key: str, metrics: list[Mapping[str, Any]]) -> float | None:
    """The mean of one metric over the hospitals that disclosed it; None if none did."""
    values = [float(m[key]) for m in metrics if key in m]
    return float(np.mean(values)) if values else None


LEDGER = "privacy.jsonl"  # DP-SGD steps each hospital released, one line per hospital and attempted round


def append_lines(path: Path, lines: Iterable[dict[str, Any]]) -> None:
    """Append JSON lines and sync them to disk before returning."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(line) + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


def read_ledger(run: Path) -> dict[str, History]:
    """Each hospital's DP history from the run's ledger (empty for a new run)."""
    histories: dict[str, History] = {}
    path = run / LEDGER
    for line in path.read_text().splitlines() if path.exists() else []:
        entry = json.loads(line)
        histories.setdefault(entry["hospital"], []).append(
            (float(entry["noise"]), float(entry["rate"]), int(entry["steps"]))
        )
    return histories


def best_kid(run: Path) -> float | None:
    """The lowest per-round KID recorded so far in `run` (a resumed federation keeps its best)."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return None
    values = [
        line["kid"]
        for line in map(json.loads, path.read_text().splitlines())
        if line.get("aggregate") and "kid" in line
    ]
    return min(values) if values else None


def run_rounds(
    grid: Grid,
    context: Context,
    settings: FederationSettings,
    initial: OrderedDict[str, torch.Tensor],
    start_round: int,
    resumed: dict[str, Any] | None = None,
) -> None:
    """The ServerApp's work: rounds start_round+1 .. settings.rounds, with the configured algorithm;
    `resumed` is the `extra` of the checkpoint resumed from (the server optimiser's state)."""
    resumed = resumed or {}
    if (
        resumed.get("privacy") and not (settings.run / LEDGER).exists()
    ):  # a run from before the ledger kept DP histories here
        append_lines(
            settings.run / LEDGER,
            [
                {"round": 0, "hospital": hospital, "noise": h[0], "rate": h[1], "steps": h[2]}
                for hospital, history in resumed["privacy"].items()
                for h in history
            ],
        )
    recorder = RoundRecorder(settings, start_round)
    connected_nodes(
        grid, settings.clients, settings.round_timeout
    )  # every hospital, once; later rounds go on without the absent
    if settings.algorithm.name == "mdgan":
        from fedgan.federation.split_server import run_split  # noqa: PLC0415 (only mdgan runs need it)

        run_split(grid, settings, recorder, initial, resumed)
        return
    if settings.secagg:
        run_secure(grid, context, settings, recorder, initial)
        return

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if (
            server_round and recorded.aggregated != server_round
        ):  # Flower's client-DP wrapper skips a round with a failure
            raise RoundFailed(
                f"round {start_round + server_round}: not aggregated (client-level DP needs a reply from every "
                "sampled hospital); nothing of it was saved"
            )
        recorder.end_round(server_round, arrays.to_torch_state_dict())
        return None

    recorded = make_strategy(settings, recorder, recorder.state)
    recorded.load_server_state(resumed.get(SERVER_OPTIMISER, {}))
    recorder.extra = lambda: {SERVER_OPTIMISER: recorded.server_state()}
    strategy: Strategy = recorded
    if settings.client_dp:
        strategy = DifferentialPrivacyServerSideFixedClipping(
            recorded,
            noise_multiplier=settings.client_dp.noise,
            clipping_norm=settings.client_dp.clip,
            num_sampled_clients=sampled_hospitals(settings),
        )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial),
        num_rounds=settings.rounds - start_round,
        timeout=settings.round_timeout,
        train_config=settings.round_config(),
        evaluate_fn=evaluate,
    )


def make_server_app(
    settings: FederationSettings,
    initial: OrderedDict[str, torch.Tensor],
    start_round: int,
    resumed: dict[str, Any] | None = None,
) -> ServerApp:
    """A ServerApp bound to one run's settings (the simulation engine runs it in this process)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_rounds(grid, context, settings, initial, start_round, resumed)

    return app
