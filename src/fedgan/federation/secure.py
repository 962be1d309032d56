"""Secure aggregation with Flower's SecAgg+: the coordinator only ever sees the sum of the updates.

How it maps onto the federation:

- Flower implements SecAgg+ in its legacy API only: `SecAggPlusWorkflow` inside a
  `DefaultWorkflow` with a legacy `Strategy` on the server, `secaggplus_mod` on the client. The
  ClientApp routes the protocol's messages to the mod (`client_app.train`); the ServerApp runs
  `run_secure` instead of the message-API FedAvg. Same local training, same run folder.
- The protocol sums integers modulo 2^32. Each hospital sends its *update* (local minus global
  weights) times its weight ratio `w / max_weight`, clipped to [-clip, clip] and stochastically
  rounded onto `quantization` levels; pairwise masks cancel in the sum and the server divides by
  the summed ratios. Updates rather than weights: they are small, so a fixed range holds them and
  the quantisation step is small next to them. Clipping is done by the hospital, which reports the
  share of values it clipped and its largest update (`clipped`, `largest-update` in metrics.jsonl).
- Error: per value at most one quantisation step per hospital, over the summed weight ratios
  (`error_bound`); with the defaults and 3 hospitals about 1e-5 per round.
- Dropouts: a hospital that fails after the key exchange is a "dead" node; the others hold shares
  of its mask seeds, so the round goes on while every hospital keeps `threshold` live neighbours.
  When too many drop out for that, the round is retried without them (`run_secure`).
- What the server cannot check: it never sees one hospital's update, so the screening of
  `fedgan.federation.screening` does not apply, and a hospital may scale its own update by any
  weight up to `max_weight` (which comes from the server's registry, so the honest ones keep
  their quantisation). Use SecAgg+ with hospitals you trust to follow the protocol.
- Not reproducible bit for bit: the rounding and the masks draw fresh randomness each round.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow
from flwr.serverapp import Grid

from fedgan.federation import keys
from fedgan.federation.failures import RoundFailed, short_reason
from fedgan.federation.recorder import RoundRecorder
from fedgan.federation.settings import FederationSettings

log = logging.getLogger(__name__)

#: bytes per value of a masked vector (SecAgg+ sends int64 arrays)
MASKED_BYTES = 8


def clipped_update(
    trained: dict[str, torch.Tensor], start: dict[str, torch.Tensor], clip: float
) -> tuple[list[np.ndarray], float, float]:
    """(trained - start) per tensor, clipped to [-clip, clip]; also the clipped share and the largest |value|."""
    update = [(trained[name].float() - value.float()).numpy() for name, value in start.items()]
    total = sum(u.size for u in update)
    clipped = sum(int((np.abs(u) > clip).sum()) for u in update)
    largest = max(float(np.abs(u).max()) for u in update if u.size)
    return [np.clip(u, -clip, clip) for u in update], clipped / total, largest


class SecureFedAvg(LegacyFedAvg):
    """The legacy strategy SecAggPlusWorkflow drives: it receives the unmasked mean update only.

    The workflow hands every hospital's result the same aggregated vector (individual updates
    never exist in the clear on the server), so aggregation is: global weights + that mean.
    """

    def __init__(
        self, settings: FederationSettings, recorder: RoundRecorder, initial: OrderedDict[str, torch.Tensor]
    ) -> None:
        super().__init__(
            fraction_fit=settings.fraction,
            fraction_evaluate=0.0,
            min_fit_clients=max(2, settings.min_successful),
            min_available_clients=max(2, settings.min_successful),
            on_fit_config_fn=self.fit_config,
            initial_parameters=ndarrays_to_parameters([v.numpy() for v in initial.values()]),
        )
        self.settings = settings
        self.recorder = recorder
        self.names = list(initial)
        self.current = [v.numpy().copy() for v in initial.values()]
        self.aggregated_round = 0

    def fit_config(self, server_round: int) -> dict[str, Scalar]:
        return {**self.settings.round_config(), keys.GLOBAL_ROUND: self.recorder.start_round + server_round}

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        global_round = self.recorder.start_round + server_round
        size = sum(a.size for a in self.current)
        self.recorder.clients(
            global_round,
            [(proxy.node_id, fit.metrics) for proxy, fit in results],
            [(None, reason) for reason in failure_reasons(failures)],
            bytes_received=sum(a.nbytes for a in self.current),
            bytes_sent=(size + 1) * MASKED_BYTES,
        )
        if len(results) < self.settings.min_successful:
            raise RoundFailed(
                f"round {global_round}: only {len(results)} hospital(s) returned a usable model, "
                f"{self.settings.min_successful} required"
            )
        mean_update = parameters_to_ndarrays(results[0][1].parameters)
        self.current = [(w + u).astype(w.dtype) for w, u in zip(self.current, mean_update, strict=True)]
        self.aggregated_round = server_round
        return ndarrays_to_parameters(self.current), {}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        """Called with the initial model (round 0) and after each round, aggregated or not."""
        if server_round > 0 and self.aggregated_round != server_round:
            raise SecureRoundHalted(
                f"round {self.recorder.start_round + server_round}: secure aggregation halted: too few "
                "hospitals took part in the protocol (see the log above)"
            )
        arrays = parameters_to_ndarrays(parameters)
        self.recorder.end_round(
            server_round, OrderedDict((n, torch.from_numpy(a)) for n, a in zip(self.names, arrays, strict=True))
        )
        return None


def failure_reasons(failures: list[Any]) -> list[str]:
    """One reason per failed hospital from what SecAggPlusWorkflow collects: `Exception(msg.error)`,
    appended twice for a hospital that fails while training (so one per distinct Error object).
    The node is not recorded with it; the reason names the hospital."""
    errors = {id(e): e for e in (f.args[0] if isinstance(f, BaseException) and f.args else f for f in failures)}
    return [short_reason(str(getattr(error, "reason", error))) for error in errors.values()]


class SecureRoundHalted(RoundFailed):
    """SecAgg+ could not finish a round: too many of some hospital's neighbours dropped out."""


class AttendedGrid:
    """The grid without the hospitals that failed to answer in this run; it remembers who failed.

    SecAgg+ halts a round when a hospital keeps fewer than `threshold` live neighbours, and its
    masks cannot be rebuilt. Retrying the round without the hospitals that dropped out lets
    the federation go on; they take part again after a resume."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.excluded: set[int] = set()
        self.failed: set[int] = set()

    @property
    def run(self) -> Any:  # Flower's legacy compatibility layer reads grid.run.run_id
        return self.grid.run

    def get_node_ids(self) -> list[int]:
        return [node for node in self.grid.get_node_ids() if node not in self.excluded]

    def send_and_receive(self, messages: Any, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        answered = {r.metadata.src_node_id for r in replies if not r.has_error()}
        self.failed |= {m.metadata.dst_node_id for m in messages} - answered
        return replies


def run_secure(
    grid: Grid,
    context: Context,
    settings: FederationSettings,
    recorder: RoundRecorder,
    initial: OrderedDict[str, torch.Tensor],
) -> None:
    """All rounds of a federation with SecAgg+ (the body of the ServerApp's main). A halted round
    is retried without the hospitals that dropped out, while enough remain."""
    assert settings.secagg is not None
    attended, current = AttendedGrid(grid), initial
    while True:
        strategy = SecureFedAvg(settings, recorder, current)
        legacy = LegacyContext(
            context, config=ServerConfig(num_rounds=settings.rounds - recorder.start_round), strategy=strategy
        )
        try:
            DefaultWorkflow(fit_workflow=settings.secagg.workflow(settings.round_timeout))(attended, legacy)  # type: ignore[arg-type]
            return
        except SecureRoundHalted as halted:
            dropped = attended.failed - attended.excluded
            if not dropped or len(attended.get_node_ids()) - len(dropped) < max(2, settings.min_successful):
                raise
            log.warning(
                "%s; retrying it without the %d hospital(s) that dropped out (nodes %s)",
                halted,
                len(dropped),
                sorted(dropped),
            )
            attended.excluded |= dropped
            recorder.start_round += strategy.aggregated_round  # the rounds committed before the halt stay committed
            recorder.lines += [
                {
                    "round": recorder.start_round + 1,
                    "node": node,
                    "failed": "dropped out of a SecAgg+ round that halted; left out until the run resumes",
                }
                for node in sorted(dropped)
            ]
            current = OrderedDict(
                (name, torch.from_numpy(value)) for name, value in zip(strategy.names, strategy.current, strict=True)
            )
