"""The federation's weight-averaging algorithms, built on Flower's own strategies.

- `fedavg`: Flower's FedAvg (the paper's algorithm).
- `fedavgm`: FedAvg with server momentum (Hsu et al. 2019), Flower's `FedAvgM`.
- `fedadam`, `fedyogi`: adaptive server optimisers (Reddi et al. 2021), Flower's `FedAdam`/`FedYogi`.
- `fedprox`: a proximal term in every hospital's losses (Li et al. 2020), Flower's `FedProx`
  sends mu and `fedgan.training.proximal` applies it in the shared local loop.
- `mdgan` is not a weight average: see `fedgan.federation.split_server`.

Every strategy here is Flower's class with one mixin (`RecordedRounds`) that records each
hospital's reply, leaves failed hospitals out, counts rounds across a resume, and keeps two
kinds of values out of the server optimiser: the generator's moving average and the buffers
(batch-norm statistics, spectral-norm vectors). Those are not parameters with a gradient; a
server Adam step on a running variance can make it negative. They take the plain weighted mean.

The server optimiser's state (momentum, Adam moments) goes into every round checkpoint, so a
resumed federation continues exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedMedian, FedProx, FedTrimmedAvg, FedYogi, Krum

from fedgan.config import DISCLOSURES, AlgorithmConfig, TrainConfig
from fedgan.errors import FedGANError
from fedgan.federation import keys, wire
from fedgan.federation.failures import RoundFailed, short_reason
from fedgan.federation.nodes import connected_nodes
from fedgan.federation.screening import form_problem, oversized, update_norm, weight_problem
from fedgan.federation.weights import global_weights
from fedgan.training.loop import TrainingState

if TYPE_CHECKING:
    from fedgan.federation.recorder import RoundRecorder
    from fedgan.federation.settings import FederationSettings

#: the server's step size when `--server-lr` is 0: FedAvgM's usual 1.0; for FedAdam/FedYogi about one round's local
#: change of a weight (tens of Adam steps of 1e-4), not Flower's generic 0.1 (docs/federation.md)
SERVER_LR = {"fedavgm": 1.0, "fedadam": 3e-3, "fedyogi": 3e-3}
#: FedAdam/FedYogi's adaptivity floor: well below one round's typical change of a weight (~1e-3)
TAU = 1e-5


def averaged_only(state: TrainingState) -> frozenset[str]:
    """The global-weight keys that always take the plain weighted mean (see the module docstring)."""
    parameters = {f"{name}.{key}" for name, module in state.networks().items() for key, _ in module.named_parameters()}
    return frozenset(k for k in global_weights(state) if k not in parameters)


class RecordedRounds:
    """Mixin for a Flower strategy: screen and record replies, round numbers across resumes."""

    settings: FederationSettings
    recorder: RoundRecorder
    averaged: frozenset[str]
    sent: dict[str, np.ndarray]  # the round's starting model, which replies are checked against
    asked: list[int]  # the nodes sent this round's training message
    previous_median: float | None = None  # the last round's median update norm
    aggregated: int = 0  # the last round aggregated (client-level DP may skip one)
    node_of: dict[int, int]  # hospital id -> the node that first answered for it in this run
    hospital_of: dict[int, int]  # and back

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        # Flower's sampling waits without limit for enough nodes; this waits the round's deadline, then says so.
        connected_nodes(grid, self.settings.min_successful, self.settings.round_timeout)
        config[keys.GLOBAL_ROUND] = self.recorder.start_round + server_round
        # Flower samples hospitals with the `random` module: seeded per round, a run (and its
        # resume) samples the same ones.
        random.seed(self.settings.train_config.seed * 1_000_003 + self.recorder.start_round + server_round)
        self.sent = {k: v.numpy() for k, v in arrays.items()}
        messages = list(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]
        self.asked = [m.metadata.dst_node_id for m in messages]
        return messages

    def screen(self, replies: list[Message]) -> tuple[list[Message], list[tuple[int | None, str]]]:
        """The replies that may count, and (node, reason) for the rest (`fedgan.federation.screening`)."""
        answered = {r.metadata.src_node_id for r in replies}
        dropped: list[tuple[int | None, str]] = [
            (node, f"no reply within the round timeout ({self.settings.round_timeout:g} s)")
            for node in self.asked
            if node not in answered
        ]
        kept: dict[int, tuple[Message, float]] = {}  # hospital id -> its reply and update norm
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                dropped.append((node, short_reason(reply.error.reason)))
                continue
            try:
                arrays = {k: v.numpy() for k, v in reply.content[keys.ARRAYS].items()}
                metrics = reply.content[keys.METRICS]
            except (KeyError, TypeError, ValueError) as exc:
                dropped.append((node, f"rejected: malformed reply ({exc})"))
                continue
            problem = form_problem(arrays, self.sent) or weight_problem(
                metrics, self.settings.weighting, self.settings.images
            )
            if problem is None and self.settings.algorithm.wire != wire.FP32:  # an update: the weights, in float32
                arrays = wire.decode(arrays, self.sent, self.settings.algorithm.wire)
                reply.content[keys.ARRAYS] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
            hospital = int(metrics[keys.PARTITION_ID]) if problem is None else -1
            if problem is None and hospital in kept:
                problem = f"hospital {hospital} already answered this round"
            if (
                problem is None and self.node_of.setdefault(hospital, node) != node
            ):  # one node speaks for one hospital, for the run
                problem = f"hospital {hospital} answers from node {self.node_of[hospital]} in this run"
            if problem is None and self.hospital_of.setdefault(node, hospital) != hospital:
                problem = f"node {node} answered for hospital {self.hospital_of[node]} before"
            if problem is not None:
                dropped.append((node, f"rejected: {problem}"))
                continue
            kept[hospital] = (reply, update_norm(arrays, self.sent))
        norms = {hospital: norm for hospital, (_, norm) in kept.items()}
        for hospital, reason in oversized(norms, self.previous_median).items():
            dropped.append((kept.pop(hospital)[0].metadata.src_node_id, f"rejected: {reason}"))
            del norms[hospital]
        if norms:
            self.previous_median = float(np.median(list(norms.values())))
        # In hospital order, not arrival order: float sums depend on the order, and a GAN
        # amplifies a last-bit difference into a visible one within a round.
        return [kept[hospital][0] for hospital in sorted(kept)], dropped

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        global_round = self.recorder.start_round + server_round
        valid, dropped = self.screen(list(replies))
        model_bytes = sum(a.nbytes for a in self.sent.values())
        self.recorder.clients(
            global_round,
            [(r.metadata.src_node_id, r.content[keys.METRICS]) for r in valid],
            dropped,
            model_bytes,
            model_bytes // 2 if self.settings.algorithm.wire == wire.FP16 else model_bytes,
        )
        if len(valid) < self.settings.min_successful:
            raise RoundFailed(
                f"round {global_round}: only {len(valid)} hospital(s) returned a usable model, "
                f"{self.settings.min_successful} required"
            )
        if self.settings.client_dp and dropped:  # its noise is calibrated to every sampled hospital's clipped update
            raise RoundFailed(
                f"round {global_round}: client-level DP needs every sampled hospital's update; {len(dropped)} left out"
            )
        # The global round, not Flower's count since this process started: FedAdam's bias
        # correction depends on it, and must not restart after a resume.
        arrays, metrics = super().aggregate_train(global_round, valid)  # type: ignore[misc]
        if arrays is not None and self.settings.algorithm.name in SERVER_LR:  # a server optimiser moved every entry
            mean, _ = FedAvg.aggregate_train(self, global_round, valid)  # type: ignore[arg-type]
            arrays = ArrayRecord({k: (mean[k] if k in self.averaged else v) for k, v in arrays.items()})
            if isinstance(self, FedAvgM):
                self.current_arrays = arrays
        self.aggregated = server_round
        return arrays, metrics

    def server_state(self) -> dict[str, Any]:
        """The server optimiser's state, as tensors (checkpoints load with `weights_only`)."""
        out: dict[str, Any] = {}
        for name in ("m_t", "v_t"):
            if getattr(self, name, None):
                out[name] = {k: torch.from_numpy(np.array(v)) for k, v in getattr(self, name).items()}
        if getattr(self, "momentum_vector", None) is not None:
            out["momentum_vector"] = [torch.from_numpy(np.array(v)) for v in self.momentum_vector]  # type: ignore[attr-defined]
        return out

    def load_server_state(self, saved: dict[str, Any]) -> None:
        for name in ("m_t", "v_t"):
            if name in saved:
                setattr(self, name, {k: v.numpy() for k, v in saved[name].items()})
        if "momentum_vector" in saved:
            self.momentum_vector = [v.numpy() for v in saved["momentum_vector"]]


FLOWER_STRATEGIES: dict[str, type[FedAvg]] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedprox": FedProx,
}
#: fedavg's robust alternatives to the mean (`--aggregation`), Flower's own
ROBUST: dict[str, type[FedAvg]] = {"mean": FedAvg, "median": FedMedian, "trimmed-mean": FedTrimmedAvg, "krum": Krum}


def make_strategy(settings: FederationSettings, recorder: RoundRecorder, state: TrainingState) -> FedAvg:
    """Flower's strategy for `settings.algorithm`, with our recording mixin."""
    algorithm = settings.algorithm
    base = ROBUST[algorithm.aggregation] if algorithm.name == "fedavg" else FLOWER_STRATEGIES[algorithm.name]
    lr = algorithm.server_lr or SERVER_LR.get(algorithm.name, 1.0)
    options: dict[str, Any] = {
        "fedavgm": {"server_learning_rate": lr, "server_momentum": algorithm.server_momentum},
        "fedadam": {"eta": lr, "beta_1": algorithm.server_momentum, "tau": TAU},
        "fedyogi": {"eta": lr, "beta_1": algorithm.server_momentum, "tau": TAU},
        "fedprox": {"proximal_mu": algorithm.proximal_mu},
    }.get(algorithm.name, {"num_malicious_nodes": algorithm.byzantine} if algorithm.aggregation == "krum" else {})
    cls = type(f"Recorded{base.__name__}", (RecordedRounds, base), {})
    # Every hospital connected before round 1 (`server_app.run_rounds`); from then on a round goes
    # on with those present, as long as there are min-successful of them.
    strategy = cls(
        fraction_train=settings.fraction,
        fraction_evaluate=0.0,
        min_train_nodes=settings.min_successful,
        min_available_nodes=settings.min_successful,
        weighted_by_key=keys.WEIGHTINGS[settings.weighting],
        arrayrecord_key=keys.ARRAYS,
        configrecord_key=keys.CONFIG,
        train_metrics_aggr_fn=no_average,
        **options,
    )
    strategy.settings, strategy.recorder, strategy.averaged = settings, recorder, averaged_only(state)
    strategy.node_of, strategy.hospital_of = {}, {}
    return strategy


def no_average(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Flower would log a weighted mean of every reply metric (hospital ids, grade counts...):
    meaningless numbers. Each hospital's own figures go to metrics.jsonl instead."""
    return MetricRecord()


def check_disclosure(disclose: Iterable[str]) -> None:
    unknown = [d for d in disclose if d not in DISCLOSURES]
    if unknown:
        raise FedGANError(f"--disclose takes {', '.join(DISCLOSURES)} (comma-separated, or none), got {unknown[0]!r}")


def check_algorithm(
    algorithm: AlgorithmConfig,
    secagg: bool,
    client_dp: bool,
    train_config: TrainConfig,
    fraction: float,
    model: str = "gan",
) -> None:
    """Refuse, before any engine starts, the combinations an algorithm cannot run (`model`: the kind trained)."""
    if model == "ddpm" and algorithm.name == "mdgan":
        raise FedGANError(
            "mdgan splits a GAN between a server generator and hospital discriminators; a DDPM has no "
            "discriminator: use a weight average (--algorithm fedavg, fedavgm, fedadam, fedyogi or fedprox)"
        )
    if secagg and algorithm.name not in ("fedavg", "fedprox"):
        raise FedGANError(
            "--secagg runs with --algorithm fedavg or fedprox only: SecAgg+ gives the server the sum of the updates, "
            + (
                "while mdgan exchanges per-image gradients, not updates"
                if algorithm.name == "mdgan"
                else "and Flower implements it for plain FedAvg only"
            )
        )
    if algorithm.aggregation != "mean" and (secagg or client_dp):
        raise FedGANError(
            f"--aggregation {algorithm.aggregation} needs each hospital's update, which "
            f"{'SecAgg+ hides from the server' if secagg else 'client-level DP averages before the server sees it'}"
        )
    if algorithm.name == "mdgan" and client_dp:
        raise FedGANError("client-level DP clips whole model updates, and mdgan sends none")
    if algorithm.name == "mdgan" and train_config.private:
        raise FedGANError(
            "mdgan does not run DP-SGD on the hospitals' discriminators yet: use --algorithm fedavg or fedprox with "
            "--dp-epsilon"
        )
    if algorithm.wire != "fp32" and (secagg or algorithm.name == "mdgan"):
        raise FedGANError(
            f"--wire {algorithm.wire} applies to plain weight averaging: "
            + ("SecAgg+ sends its own quantised integers" if secagg else "mdgan sends images and gradients, not models")
        )
    if algorithm.name == "mdgan" and fraction < 1:
        raise FedGANError("mdgan asks every hospital in every exchange: --fraction must be 1")
