"""The ServerApp of the deployment engine: `flwr run . <connection>` against a real SuperLink.

Hospitals run a SuperNode each with `--node-config "data-dir=/path/to/their/store"`; the same
ClientApp as in simulation trains on that store's whole training split. The coordinator's
settings come from the run config (`[tool.flwr.app.config]` in pyproject.toml, overridable with
`flwr run . <connection> --run-config "federation.rounds=5"`), in four sections:

- `federation.*`: run-dir (absolute, or relative to the SuperLink's working directory),
  hospitals (how many SuperNodes to wait for), rounds, weighting, fraction, min-successful,
  init (a checkpoint to start from), secagg, secagg-clip, secagg-max-weight (0: ask the
  hospitals for their training-set sizes and use the largest);
- `algorithm.*`: any `AlgorithmConfig` field (name: fedavg, fedavgm, fedadam, fedyogi, fedprox, mdgan);
- `model.*`: any `GANConfig` field (resolution must match the hospitals' stores);
- `train.*`: any `TrainConfig` field (`epochs` = local epochs per round).

The run folder is the one `fedgan federate` writes. If run-dir already holds a run, the
federation resumes after its last round, so a coordinator restart loses at most one round.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedgan.config import AlgorithmConfig, TrainConfig, from_dict, to_dict
from fedgan.errors import FedGANError
from fedgan.federation import keys
from fedgan.federation.failures import short_reason
from fedgan.federation.secure import SecAggSettings
from fedgan.federation.server_app import FederationSettings, run_rounds
from fedgan.federation.split_server import connected_nodes
from fedgan.federation.algorithms import check_algorithm
from fedgan.federation.weights import global_weights
from fedgan.models.dcgan import GANConfig
from fedgan.provenance import write_run_record
from fedgan.training.checkpoint import init_from_checkpoint, read_checkpoint, restore_state
from fedgan.training.loop import new_state

log = logging.getLogger(__name__)

#: the partition name recorded for deployment runs: every hospital trains on its own store
OWN_STORES = "own-stores"

server_app = ServerApp()


def sections(run_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`federation.rounds = 2` -> {"federation": {"rounds": 2}}; unknown sections are an error."""
    out: dict[str, dict[str, Any]] = {"federation": {}, "algorithm": {}, "model": {}, "train": {}}
    for key, value in run_config.items():
        section, _, name = key.partition(".")
        if section not in out or not name:
            raise FedGANError(f"run config key {key!r}: expected federation.*, algorithm.*, model.* or train.*")
        out[section][name] = value
    return out


def deployment_settings(run_config: dict[str, Any]) -> tuple[FederationSettings, OrderedDict[str, torch.Tensor], int, dict[str, Any]]:
    """Settings, starting weights, rounds already done and DP histories, from the run config and any existing run."""
    config = sections(run_config)
    fed = config["federation"]
    run = Path(str(fed["run-dir"])).resolve()
    model_config = from_dict(GANConfig, config["model"])
    train_config = from_dict(TrainConfig, config["train"])
    secagg = SecAggSettings(clip=float(fed["secagg-clip"]), max_weight=float(fed["secagg-max-weight"])) if fed["secagg"] else None
    algorithm = from_dict(AlgorithmConfig, config["algorithm"])
    check_algorithm(algorithm, secagg is not None, False, train_config, float(fed["fraction"]))
    start_round, resumed = 0, {}
    if (run / "checkpoints" / "latest").exists():
        data = read_checkpoint(run)
        state, train_config = restore_state(data, torch.device("cpu"))
        model_config, start_round, resumed = state.model_config, int(data["extra"]["round"]), data["extra"]
        log.info("%s holds a run: resuming after round %d", run, start_round)
    else:
        state = new_state(model_config, train_config, torch.device("cpu"))
        if fed["init"]:
            init_from_checkpoint(state, Path(str(fed["init"])), train_config)
        run.mkdir(parents=True, exist_ok=True)
        write_run_record(run, seed=train_config.seed, stores={}, config={
            "federation": {**fed, "partition": OWN_STORES}, "algorithm": to_dict(algorithm), "model": to_dict(model_config), "train": to_dict(train_config)})
    settings = FederationSettings(None, run, int(fed["hospitals"]), OWN_STORES, int(fed["rounds"]), model_config, train_config,
                                  fraction=float(fed["fraction"]), weighting=str(fed["weighting"]),
                                  min_successful=int(fed["min-successful"]), secagg=secagg, algorithm=algorithm)
    return settings, global_weights(state), start_round, resumed


def hospital_sizes(grid: Grid, hospitals: int, timeout: float = 600.0) -> list[int]:
    """Training-set size of each connected hospital, once `hospitals` SuperNodes are connected."""
    nodes = connected_nodes(grid, hospitals, timeout)
    queries = [Message(RecordDict(), dst_node_id=node, message_type=f"{MessageType.QUERY}.{keys.SIZE_QUERY}") for node in nodes]
    replies = list(grid.send_and_receive(queries, timeout=timeout))
    failed = [short_reason(r.error.reason) for r in replies if r.has_error()]
    if failed:
        raise FedGANError(f"a hospital could not report its training-set size: {failed[0]}")
    return [int(r.content[keys.METRICS][keys.NUM_EXAMPLES]) for r in replies]


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    settings, initial, start_round, resumed = deployment_settings(dict(context.run_config))
    if start_round >= settings.rounds:
        log.warning("%s already completed %d of %d rounds; raise federation.rounds to continue", settings.run, start_round, settings.rounds)
        return
    if settings.secagg and not settings.secagg.max_weight:  # 0: fit the weight range to the hospitals
        sizes = hospital_sizes(grid, settings.clients)
        weight = float(max(sizes)) if settings.weighting == "examples" else 1.0
        settings = dataclasses.replace(settings, secagg=dataclasses.replace(settings.secagg, max_weight=weight))
        log.info("SecAgg+: hospitals hold %s training images; max-weight %g", sizes, weight)
    run_rounds(grid, context, settings, initial, start_round, resumed)
