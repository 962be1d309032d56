"""The ServerApp of the deployment engine: `flwr run . <connection>` against a real SuperLink.

Hospitals run a SuperNode each with `--node-config "data-dir=/path/to/their/store"`; the same
ClientApp as in simulation trains on that store's whole training split. The coordinator's
settings come from the run config (`[tool.flwr.app.config]` in pyproject.toml, overridable with
`flwr run . <connection> --run-config "federation.rounds=5"`), in four sections:

- `federation.*`: run-dir (absolute, or relative to the SuperLink's working directory),
  registry (the operator's TOML of hospital ids and image counts, `fedgan.federation.registry`:
  the server's weights), hospitals (how many SuperNodes to wait for before round 1), rounds,
  weighting, fraction, min-successful, round-timeout, disclose (what hospitals reveal beyond their
  weight: "losses", "grades", both comma-separated, or ""), init (a checkpoint to start from),
  secagg, secagg-clip (its weight range is the registry's largest count);
- `algorithm.*`: any `AlgorithmConfig` field (name: fedavg, fedavgm, fedadam, fedyogi, fedprox, mdgan);
- `model.*`: kind ("gan" or "ddpm") and any field of that kind's config, `GANConfig` or
  `DiffusionConfig` (resolution must match the hospitals' stores);
- `train.*`: any `TrainConfig` field (`epochs` = local epochs per round).

The run folder is the one `fedgan federate` writes. If run-dir already holds a run, the
federation resumes after its last round, so a coordinator restart loses at most one round.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedgan.config import AlgorithmConfig, TrainConfig, from_dict, model_from_record, model_table, to_dict
from fedgan.errors import FedGANError
from fedgan.federation.algorithms import check_algorithm, check_disclosure
from fedgan.federation.registry import read_registry
from fedgan.federation.server_app import run_rounds
from fedgan.federation.settings import FederationSettings, SecAggSettings
from fedgan.federation.weights import global_weights
from fedgan.runfolder import RunFolder
from fedgan.training.checkpoint import init_from_checkpoint, read_checkpoint, restore_state
from fedgan.training.states import new_model_state

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


def deployment_settings(
    run_config: dict[str, Any],
) -> tuple[FederationSettings, OrderedDict[str, torch.Tensor], int, dict[str, Any]]:
    """Settings, starting weights, rounds already done and DP histories, from the run config and any existing run."""
    config = sections(run_config)
    fed = config["federation"]
    run = Path(str(fed["run-dir"])).resolve()
    model_config = model_from_record(config["model"])
    train_config = from_dict(TrainConfig, config["train"])
    if not fed.get("registry"):
        raise FedGANError(
            "federation.registry is required: a TOML file of `hospital-id = training images` that the coordinator "
            "holds each hospital's weight to (see fedgan.federation.registry)"
        )
    images = read_registry(Path(str(fed["registry"])))
    weight = float(max(images.values())) if str(fed["weighting"]) == "examples" else 1.0
    secagg = SecAggSettings(clip=float(fed["secagg-clip"]), max_weight=weight) if fed["secagg"] else None
    algorithm = from_dict(AlgorithmConfig, config["algorithm"])
    disclose = tuple(d for d in str(fed["disclose"]).split(",") if d)
    check_disclosure(disclose)
    check_algorithm(algorithm, secagg is not None, False, train_config, float(fed["fraction"]), model_config.kind)
    start_round, resumed = 0, {}
    folder = RunFolder(run)
    if folder.has_run():
        data = read_checkpoint(run)
        state, train_config = restore_state(data, torch.device("cpu"))
        model_config, start_round, resumed = state.model_config, int(data["extra"]["round"]), data["extra"]
        log.info("%s holds a run: resuming after round %d", run, start_round)
    else:
        state = new_model_state(model_config, train_config, torch.device("cpu"))
        if fed["init"]:
            init_from_checkpoint(state, Path(str(fed["init"])), train_config)
        folder.create(
            seed=train_config.seed,
            stores={},
            config={
                "federation": {**fed, "partition": OWN_STORES},
                "algorithm": to_dict(algorithm),
                "model": model_table(model_config),
                "train": to_dict(train_config),
            },
        )
    settings = FederationSettings(
        None,
        run,
        int(fed["hospitals"]),
        OWN_STORES,
        int(fed["rounds"]),
        model_config,
        train_config,
        fraction=float(fed["fraction"]),
        weighting=str(fed["weighting"]),
        min_successful=int(fed["min-successful"]),
        secagg=secagg,
        algorithm=algorithm,
        images=images,
        round_timeout=float(fed["round-timeout"]),
        disclose=disclose,
    )
    return settings, global_weights(state), start_round, resumed


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    settings, initial, start_round, resumed = deployment_settings(dict(context.run_config))
    if start_round >= settings.rounds:
        log.warning(
            "%s already completed %d of %d rounds; raise federation.rounds to continue",
            settings.run,
            start_round,
            settings.rounds,
        )
        return
    run_rounds(grid, context, settings, initial, start_round, resumed)
