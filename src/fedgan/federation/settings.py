"""The settings of one federation, and the rules derived from them that several modules apply.

`FederationSettings` is what the ServerApp, SecAgg+, the algorithms, mdgan's server and the
recorder read; it lives here, apart from all of them, so none of them imports another to get it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from flwr.app import ConfigRecord
from flwr.server.workflow import SecAggPlusWorkflow

from fedgan.config import FEDERATION, AlgorithmConfig, ModelConfig, TrainConfig, model_record
from fedgan.federation import keys


@dataclasses.dataclass(frozen=True)
class SecAggSettings:
    clip: float = FEDERATION.secagg_clip  # update values are clipped to [-clip, clip]
    quantization: int = 2**22  # levels over that range (Flower's default; 2^32 / 2^22 allows 1024 hospitals)
    # Each hospital masks with (and sends key shares to) this share of the round's hospitals, odd
    # and at least 3 (Flower's rule): all of 3 or 5, 5 of 10. Masking costs one pseudo-random
    # vector of the model's size per neighbour, so all-to-all grows with the square of hospitals.
    shares: float = 0.5
    threshold: float = 2 / 3  # share of those needed to rebuild a dropped hospital's masks
    max_weight: float = 1.0  # the largest weight a hospital may send (its example count, or 1 unweighted)

    def workflow(self, timeout: float) -> SecAggPlusWorkflow:
        """Flower's workflow; each protocol stage waits at most `timeout` seconds (its default waits forever)."""
        return SecAggPlusWorkflow(
            num_shares=self.shares,
            reconstruction_threshold=self.threshold,
            max_weight=self.max_weight,
            clipping_range=self.clip,
            quantization_range=self.quantization,
            timeout=timeout,
        )

    def step(self) -> float:
        """One quantisation level, in weight units."""
        return 2 * self.clip / self.quantization

    def error_bound(self, weights: list[float]) -> float:
        """Largest error of one aggregated value against exact FedAvg for hospitals with these weights."""
        return len(weights) * self.step() / sum(w / self.max_weight for w in weights)


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
    model_config: ModelConfig
    train_config: TrainConfig  # `epochs` = local epochs per round
    alpha: float = FEDERATION.alpha
    fraction: float = FEDERATION.fraction  # share of hospitals sampled each round
    weighting: str = FEDERATION.weighting
    min_successful: int = FEDERATION.min_successful  # a round fails if fewer hospitals return usable models
    client_cpus: float = FEDERATION.client_cpus  # simulation: CPU cores per virtual hospital (0: all, or deployment)
    secagg: SecAggSettings | None = None  # None: plain FedAvg, the server sees each hospital's model
    client_dp: ClientDP | None = None
    algorithm: AlgorithmConfig = AlgorithmConfig()
    # The server's own image count per hospital id, which each reply's weight must match: the
    # partition's in simulation, the operator's registry in deployment (`federation.registry`).
    images: Mapping[int, int] | None = None
    round_timeout: float = FEDERATION.round_timeout  # seconds a round (or a SecAgg+ stage) waits for replies
    # What hospitals reveal beyond their weight and id (`fedgan.config.DISCLOSURES`). Losses by
    # default, for the per-hospital curves; grade counts only when asked (mdgan always needs them).
    disclose: tuple[str, ...] = FEDERATION.disclose

    def sampled(self) -> int:
        """Hospitals asked to train in each round."""
        return max(1, round(self.fraction * self.clients))

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
                keys.MODEL_CONFIG: json.dumps(model_record(self.model_config)),
                keys.TRAIN_CONFIG: json.dumps(dataclasses.asdict(self.train_config)),
                keys.ROUNDS: self.rounds,
                keys.DISCLOSE: ",".join(self.disclosed()),
                keys.WIRE: self.algorithm.wire,
                **(
                    {
                        keys.STORE: str(self.store.resolve()),
                        keys.HOSPITAL_STATE: str((self.run / "hospitals").resolve()),
                    }
                    if self.store
                    else {}
                ),
                **({keys.THREADS: max(1, int(self.client_cpus))} if self.client_cpus else {}),
                # one engine worker serves every hospital (`simulate.start_engine` gives it all cores)
                **({keys.IN_MEMORY: True} if self.store and not self.client_cpus else {}),
                **({keys.PROXIMAL_MU: self.algorithm.proximal_mu} if self.algorithm.name == "fedprox" else {}),
                **(
                    {keys.SECAGG_CLIP: self.secagg.clip, keys.SECAGG_MAX_WEIGHT: self.secagg.max_weight}
                    if self.secagg
                    else {}
                ),
            }
        )
