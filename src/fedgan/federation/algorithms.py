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

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx, FedYogi

from fedgan.config import AlgorithmConfig, TrainConfig
from fedgan.errors import FedGANError
from fedgan.federation import keys
from fedgan.federation.failures import short_reason
from fedgan.federation.weights import global_weights
from fedgan.training.loop import GANState

if TYPE_CHECKING:
    from fedgan.federation.server_app import FederationSettings, RoundRecorder

#: the server's step size when `--server-lr` is 0: FedAvgM's usual 1.0; for FedAdam/FedYogi about one round's local
#: change of a weight (tens of Adam steps of 1e-4), not Flower's generic 0.1 (docs/federation.md)
SERVER_LR = {"fedavgm": 1.0, "fedadam": 3e-3, "fedyogi": 3e-3}
#: FedAdam/FedYogi's adaptivity floor: well below one round's typical change of a weight (~1e-3)
TAU = 1e-5


def averaged_only(state: GANState) -> frozenset[str]:
    """The global-weight keys that always take the plain weighted mean (see the module docstring)."""
    parameters = {f"{name}.{key}" for name, module in (("generator", state.generator), ("discriminator", state.discriminator))
                  for key, _ in module.named_parameters()}
    return frozenset(k for k in global_weights(state) if k not in parameters)


class RecordedRounds:
    """Mixin for a Flower strategy: record replies, drop failures, round numbers across resumes."""

    settings: FederationSettings
    recorder: RoundRecorder
    averaged: frozenset[str]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        config[keys.GLOBAL_ROUND] = self.recorder.start_round + server_round
        return super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]

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
        # The global round, not Flower's count since this process started: FedAdam's bias
        # correction depends on it, and must not restart after a resume.
        arrays, metrics = super().aggregate_train(global_round, valid)  # type: ignore[misc]
        if arrays is not None and self.settings.algorithm.name in SERVER_LR:  # a server optimiser moved every entry
            mean, _ = FedAvg.aggregate_train(self, global_round, valid)  # type: ignore[arg-type]
            arrays = ArrayRecord({k: (mean[k] if k in self.averaged else v) for k, v in arrays.items()})
            if isinstance(self, FedAvgM):
                self.current_arrays = arrays
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


FLOWER_STRATEGIES: dict[str, type[FedAvg]] = {"fedavg": FedAvg, "fedavgm": FedAvgM, "fedadam": FedAdam, "fedyogi": FedYogi,
                                              "fedprox": FedProx}


def make_strategy(settings: FederationSettings, recorder: RoundRecorder, state: GANState) -> FedAvg:
    """Flower's strategy for `settings.algorithm`, with our recording mixin."""
    algorithm = settings.algorithm
    base = FLOWER_STRATEGIES[algorithm.name]
    lr = algorithm.server_lr or SERVER_LR.get(algorithm.name, 1.0)
    options: dict[str, Any] = {
        "fedavgm": {"server_learning_rate": lr, "server_momentum": algorithm.server_momentum},
        "fedadam": {"eta": lr, "beta_1": algorithm.server_momentum, "tau": TAU},
        "fedyogi": {"eta": lr, "beta_1": algorithm.server_momentum, "tau": TAU},
        "fedprox": {"proximal_mu": algorithm.proximal_mu},
    }.get(algorithm.name, {})
    cls = type(f"Recorded{base.__name__}", (RecordedRounds, base), {})
    # min_train_nodes is the number to sample: FedAvg otherwise derives it from the nodes
    # registered at that instant, which right after start-up can be fewer than all.
    strategy = cls(fraction_train=settings.fraction, fraction_evaluate=0.0, min_train_nodes=sampled_hospitals(settings),
                   min_available_nodes=settings.clients, weighted_by_key=keys.WEIGHTINGS[settings.weighting],
                   arrayrecord_key=keys.ARRAYS, configrecord_key=keys.CONFIG, **options)
    strategy.settings, strategy.recorder, strategy.averaged = settings, recorder, averaged_only(state)
    return strategy


def sampled_hospitals(settings: FederationSettings) -> int:
    """Hospitals that train in each round."""
    return max(1, round(settings.fraction * settings.clients))


def check_algorithm(algorithm: AlgorithmConfig, secagg: bool, client_dp: bool, train_config: TrainConfig, fraction: float) -> None:
    """Refuse, before any engine starts, the combinations an algorithm cannot run."""
    if secagg and algorithm.name not in ("fedavg", "fedprox"):
        raise FedGANError(f"--secagg runs with --algorithm fedavg or fedprox only: SecAgg+ gives the server the sum of the updates, "
                          f"{'while mdgan exchanges per-image gradients, not updates' if algorithm.name == 'mdgan' else 'and Flower implements it for plain FedAvg only'}")
    if algorithm.name == "mdgan" and client_dp:
        raise FedGANError("client-level DP clips whole model updates, and mdgan sends none")
    if algorithm.name == "mdgan" and train_config.private:
        raise FedGANError("mdgan does not run DP-SGD on the hospitals' discriminators yet: use --algorithm fedavg or fedprox with --dp-epsilon")
    if algorithm.name == "mdgan" and fraction < 1:
        raise FedGANError("mdgan asks every hospital in every exchange: --fraction must be 1")
