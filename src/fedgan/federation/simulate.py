"""`fedgan federate`: N virtual hospitals on Flower's simulation engine, one run folder.

The folder's format is `fedgan.runfolder`'s: samples and checkpoints per round (the global G and
D, resumable and usable as `--init` for another run), a metrics line per hospital and round and
an "aggregate" line per round.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from fedgan.config import (
    FEDERATION,
    AlgorithmConfig,
    GANConfig,
    ModelConfig,
    TrainConfig,
    from_dict,
    model_table,
    to_dict,
)
from fedgan.data.partition import partition
from fedgan.data.store import Store
from fedgan.errors import FedGANError
from fedgan.federation.algorithms import check_algorithm, check_disclosure
from fedgan.federation.keys import WEIGHTINGS
from fedgan.federation.server_app import make_server_app
from fedgan.federation.settings import ClientDP, FederationSettings, SecAggSettings
from fedgan.federation.weights import global_weights
from fedgan.parallel import default_workers
from fedgan.runfolder import RunFolder
from fedgan.training.checkpoint import init_from_checkpoint, read_checkpoint, restore_state
from fedgan.training.privacy import check_private_model
from fedgan.training.run import model_config_for
from fedgan.training.states import new_model_state

log = logging.getLogger(__name__)

#: Flower must never phone home or install anything at run time (see docs/architecture.md).
FLOWER_ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # Ray's FutureWarning on every run: keep CUDA_VISIBLE_DEVICES as it is
}


class FlowerNoise(logging.Filter):
    """Drops two Flower warnings every `fedgan federate` would print, with nothing to act on:

    - `run_simulation` is deprecated in favour of `flwr run`. `flwr run` starts the ServerApp in
      another process from a Flower project's own configuration, which would split
      `fedgan federate` into a project file plus a command and lose the in-process settings
      (store, partition sizes, resumed state) the ServerApp is built with. flwr is pinned below
      1.43, so its removal is a deliberate upgrade, not a surprise.
    - `fraction_evaluate is set to 0.0`: on purpose; quality is measured at the server with the
      store's fixed evaluator, not by the hospitals.
    """

    NOISE = ("DEPRECATED FEATURE: The `run_simulation` function", "fraction_evaluate is set to 0.0")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOISE)


def start_engine(
    settings: FederationSettings,
    initial: OrderedDict[str, torch.Tensor],
    start_round: int,
    resumed: dict[str, Any] | None = None,
) -> None:
    """Flower's simulation engine: the ServerApp in this process, each hospital's ClientApp in
    the engine's workers. `fedgan.federation.inprocess.run_in_process` takes the same arguments
    and runs the same apps without an engine (what the tests use where the engine is not tested)."""
    os.environ.update(FLOWER_ENVIRONMENT)
    flower_log = logging.getLogger("flwr")
    if not any(isinstance(f, FlowerNoise) for f in flower_log.filters):
        flower_log.addFilter(FlowerNoise())
    from flwr.simulation import run_simulation

    from fedgan.federation.client_app import app as client_app

    gpus = 1.0 / settings.clients if torch.cuda.is_available() else 0.0
    cpus = settings.client_cpus or default_workers()
    run_simulation(
        server_app=make_server_app(settings, initial, start_round, resumed),
        client_app=client_app,
        num_supernodes=settings.clients,
        backend_config={
            "client_resources": {"num_cpus": cpus, "num_gpus": gpus},
            "init_args": {"log_to_driver": True},
        },
    )


def run_engine(
    settings: FederationSettings,
    initial: OrderedDict[str, torch.Tensor],
    start_round: int,
    resumed: dict[str, Any] | None = None,
) -> None:
    """Rounds start_round+1 .. settings.rounds; a federation that stops early fails with its reason."""
    reason = "the simulation engine stopped early (see the log above)"
    try:
        start_engine(settings, initial, start_round, resumed)
    except RuntimeError as exc:  # raised by the ServerApp, e.g. too few hospitals succeeded
        reason = str(exc)
    done = completed_rounds(settings.run) if RunFolder(settings.run).has_run() else 0
    if done < settings.rounds:
        raise FedGANError(
            f"federation stopped after round {done} of {settings.rounds}: {reason} "
            f"(fix the cause, then `fedgan federate --resume {settings.run}`)"
        )


def with_partition_sizes(
    store: Store, settings: FederationSettings, secagg: SecAggSettings | None
) -> FederationSettings:
    """The settings with each hospital's image count from the partition, which the server holds
    every reply's weight to (and SecAgg+'s weight range is fitted to). Fails before any engine
    starts if the partition is impossible (empty hospitals)."""
    parts = partition(
        store.labels("train"), settings.clients, settings.partition, settings.train_config.seed, alpha=settings.alpha
    )
    sizes = [len(part) for part in parts]
    # mdgan's generator steps over the pooled images at the server, so its rounds are not short
    if settings.algorithm.name != "mdgan" and (advice := few_local_steps(sizes, settings.train_config)):
        log.warning(advice)
    return dataclasses.replace(
        settings, images=dict(enumerate(sizes)), secagg=secure_settings(secagg, settings.weighting, sizes)
    )


#: an averaged round of fewer local steps than this leaves the global model far behind a
#: centralised one with the same images seen (docs/diffusion.md, the demo store over 10 label-split
#: hospitals: 12 steps a round at batches of 32 gave 30x the centralised KID, 49 at batches of 8 1.75x)
MIN_LOCAL_STEPS = 32


def local_steps(sizes: list[int], batch: int, epochs: int) -> float:
    """Local steps in a round, averaged over hospitals weighted by their images, as FedAvg weights
    their updates: the number of sequential steps the global model moves by in a round."""
    return sum(n * (n // min(batch, n)) * epochs for n in sizes) / sum(sizes)


def few_local_steps(sizes: list[int], train: TrainConfig) -> str | None:
    """Advice when a round averages fewer than `MIN_LOCAL_STEPS` local steps, with the largest
    batch size that gives enough.

    A federation progresses by roughly one hospital's sequence of steps a round, not the sum of
    all hospitals' steps, so hospitals that hold few images at a large batch move the global model
    very little per round; a smaller batch buys more steps from the same images.
    """
    steps = local_steps(sizes, train.batch_size, train.epochs)
    if steps >= MIN_LOCAL_STEPS:
        return None
    fitting = next(
        (b for b in range(train.batch_size - 1, 0, -1) if local_steps(sizes, b, train.epochs) >= MIN_LOCAL_STEPS), None
    )
    remedy = f"use --batch-size {fitting} or more local epochs" if fitting else "use more local epochs"
    return (
        f"a round averages only {steps:.0f} local steps per hospital at --batch-size {train.batch_size} and "
        f"{train.epochs} local epochs (hospitals hold {min(sizes)}-{max(sizes)} images): expect quality far below "
        f"centralised training with the same images seen ({remedy})"
    )


def secure_settings(secagg: SecAggSettings | None, weighting: str, sizes: list[int]) -> SecAggSettings | None:
    """SecAgg+ with the tightest weight range: the largest hospital's weight (best quantisation)."""
    if secagg is None:
        return None
    if len(sizes) < 2:
        raise FedGANError("--secagg needs at least 2 hospitals (a sum of one is that hospital's update)")
    return dataclasses.replace(secagg, max_weight=float(max(sizes)) if weighting == "examples" else 1.0)


def federate(
    store_path: Path,
    run: Path,
    *,
    clients: int,
    partition_kind: str = FEDERATION.partition,
    rounds: int = FEDERATION.rounds,
    model_config: ModelConfig = GANConfig(),
    train_config: TrainConfig = TrainConfig(epochs=FEDERATION.local_epochs),
    conditional: bool = False,
    init: Path | None = None,
    alpha: float = FEDERATION.alpha,
    fraction: float = FEDERATION.fraction,
    weighting: str = FEDERATION.weighting,
    min_successful: int = FEDERATION.min_successful,
    client_cpus: float = FEDERATION.client_cpus,
    secagg: SecAggSettings | None = None,
    client_dp: ClientDP | None = None,
    algorithm: AlgorithmConfig = AlgorithmConfig(),
    round_timeout: float = FEDERATION.round_timeout,
    disclose: tuple[str, ...] = FEDERATION.disclose,
) -> Path:
    """Run a new federation; `train_config.epochs` is the local epochs per round.

    `client_cpus` is each virtual hospital's share of this machine's cores, fractions included
    (0.5: two hospitals share a core, each with one torch thread). 0 (default) gives every
    hospital all cores, so hospitals train one after another at full speed: on a small machine
    that beats running them side by side, where an odd number of hospitals leaves cores idle.
    `secagg` (e.g. `SecAggSettings()`) aggregates with SecAgg+; its max-weight is set here.
    `client_dp` adds client-level DP (Flower's server-side clipping wrapper; unweighted only).
    `algorithm` picks how hospitals are combined (`fedgan.federation.algorithms`).
    `round_timeout`: seconds a round waits for replies; a hospital that has not answered by then
    is left out and the round goes on if `min_successful` did.
    `disclose`: what hospitals reveal beyond their weight (`fedgan.config.DISCLOSURES`).
    """
    folder = RunFolder(run)
    folder.refuse_existing("fedgan federate --resume")
    if weighting not in WEIGHTINGS:
        raise FedGANError(f"--weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if client_dp and (weighting != "unweighted" or secagg):
        raise FedGANError(
            "client-level DP needs --weighting unweighted (its noise assumes equal weights) and cannot run with "
            "--secagg"
        )
    if (
        not 0 < fraction <= 1
        or rounds < 1
        or not 1 <= min_successful <= clients
        or round_timeout <= 0
        or client_cpus < 0
    ):
        raise FedGANError(
            "need 0 < --fraction <= 1, --rounds >= 1, 1 <= --min-successful <= --clients, --round-timeout > 0 and "
            "--client-cpus >= 0"
        )
    check_algorithm(algorithm, secagg is not None, client_dp is not None, train_config, fraction, model_config.kind)
    check_disclosure(disclose)
    store = Store(store_path)
    config = model_config_for(store, model_config, conditional)
    check_private_model(config, train_config)
    settings = FederationSettings(
        store_path,
        run,
        clients,
        partition_kind,
        rounds,
        config,
        train_config,
        alpha,
        fraction,
        weighting,
        min_successful,
        client_cpus,
        client_dp=client_dp,
        algorithm=algorithm,
        round_timeout=round_timeout,
        disclose=disclose,
    )
    settings = with_partition_sizes(store, settings, secagg)
    state = new_model_state(config, train_config, torch.device("cpu"))
    if init is not None:
        init_from_checkpoint(state, init, train_config)
    folder.create(
        seed=train_config.seed,
        stores={"train": store_path},
        config={
            "federation": {
                "clients": clients,
                "partition": partition_kind,
                "rounds": rounds,
                "alpha": alpha,
                "fraction": fraction,
                "weighting": weighting,
                "min-successful": min_successful,
                "client-cpus": client_cpus,
                "round-timeout": round_timeout,
                "disclose": list(settings.disclosed()),
                "init": str(init) if init else "",
            },
            **({"secagg": to_dict(settings.secagg)} if settings.secagg else {}),
            **({"client-dp": to_dict(client_dp)} if client_dp else {}),
            "algorithm": to_dict(algorithm),
            "model": model_table(config),
            "train": to_dict(train_config),
        },
    )
    run_engine(settings, global_weights(state), 0)
    return run


def resume_federation(run: Path, *, rounds: int | None = None) -> Path:
    """Continue a federation after its last completed round, with the settings it started with."""
    folder = RunFolder(run)
    data = read_checkpoint(folder.latest)
    record = folder.record()
    fed = record["config"]["federation"]
    state, train_config = restore_state(data, torch.device("cpu"))
    done = int(data["extra"]["round"])
    total = rounds if rounds is not None else int(data["extra"]["rounds"])  # the latest target, after any extension
    if done >= total:
        raise FedGANError(f"{run}: already completed {done} of {total} rounds (pass --rounds to extend it)")
    settings = FederationSettings(
        folder.store(),
        run,
        int(fed["clients"]),
        str(fed["partition"]),
        total,
        state.model_config,
        train_config,
        float(fed["alpha"]),
        float(fed["fraction"]),
        str(fed["weighting"]),
        int(fed["min-successful"]),
        float(fed["client-cpus"]),
        client_dp=from_dict(ClientDP, record["config"]["client-dp"]) if "client-dp" in record["config"] else None,
        algorithm=from_dict(AlgorithmConfig, record["config"].get("algorithm", {})),
        round_timeout=float(fed.get("round-timeout", FEDERATION.round_timeout)),
        disclose=tuple(fed.get("disclose", ("losses", "grades"))),
    )
    secagg = from_dict(SecAggSettings, record["config"]["secagg"]) if "secagg" in record["config"] else None
    settings = with_partition_sizes(Store(settings.store), settings, secagg)
    log.info("resuming %s after round %d of %d", run, done, total)
    run_engine(settings, global_weights(state), done, data["extra"])
    return run


def completed_rounds(run: Path) -> int:
    return int(read_checkpoint(RunFolder(run).latest)["extra"]["round"])
