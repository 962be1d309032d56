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

import logging
from collections import OrderedDict
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy
from flwr.superlink.grid import InMemoryGrid

from fedgan.federation.algorithms import make_strategy
from fedgan.federation.failures import RoundFailed
from fedgan.federation.nodes import connected_nodes
from fedgan.federation.recorder import RoundRecorder
from fedgan.federation.secure import run_secure
from fedgan.federation.settings import FederationSettings
from fedgan.runfolder import RunFolder, append_lines

log = logging.getLogger(__name__)

SERVER_OPTIMISER = "server-optimiser"  # checkpoint extra: the server optimiser's state (momentum, Adam moments)

#: seconds between the simulation grid's looks for replies (Flower's default is 0.1): under mdgan a
#: round is dozens of short exchanges, and each waited on average half an interval for nothing
PULL_INTERVAL = 0.005


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
    ledger = RunFolder(settings.run).ledger
    if resumed.get("privacy") and not ledger.exists():  # a run from before the ledger kept DP histories here
        append_lines(
            ledger,
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
            num_sampled_clients=settings.sampled(),
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
        if isinstance(grid, InMemoryGrid):  # the simulation engine's grid: a poll costs a lock, not a network call
            grid.pull_interval = PULL_INTERVAL
        run_rounds(grid, context, settings, initial, start_round, resumed)

    return app
