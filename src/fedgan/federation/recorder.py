"""What a federation leaves in its run folder: per-hospital and per-round lines, checkpoints,
sample grids, the in-training KID, and the DP ledger."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedgan.config import NUM_GRADES
from fedgan.federation import keys
from fedgan.federation.screening import NORM_FACTOR
from fedgan.federation.settings import FederationSettings
from fedgan.federation.weights import load_global_weights
from fedgan.runfolder import AGGREGATE, KID, ROUND, SECONDS, RunFolder, append_lines
from fedgan.training.board import Board
from fedgan.training.checkpoint import BEST, prune_checkpoints, save_checkpoint
from fedgan.training.grids import save_fixed_grid
from fedgan.training.privacy import History, epsilon
from fedgan.training.states import new_model_state

log = logging.getLogger(__name__)


class RoundRecorder:
    """Writes metrics.jsonl lines, per-round checkpoints and sample grids into the run folder.

    A round's lines are written only after its checkpoint, so a round that fails or is killed
    leaves no trace that a resume would repeat. The one exception is the DP ledger
    (`privacy.jsonl`): a hospital's DP-SGD steps count from the moment its update reaches the
    server, whether or not the round is ever committed, so they are appended and synced first.
    """

    def __init__(self, settings: FederationSettings, start_round: int) -> None:
        self.settings = settings
        self.folder = RunFolder(settings.run)
        self.start_round = start_round
        self.privacy: dict[str, History] = read_ledger(settings.run)  # per hospital, across rounds and attempts
        self.lines: list[dict[str, Any]] = []  # the round's per-hospital lines, written once it is committed
        self.round_started = time.perf_counter()
        self.state = new_model_state(settings.model_config, settings.train_config, torch.device("cpu"))
        self.pending: dict[str, Any] = {}
        self.probe = None  # quality every round, in simulation (the coordinator of a deployment holds no images)
        if settings.store is not None and settings.train_config.eval_every:
            from fedgan.evaluation.probe import QualityProbe  # imports the evaluator only for runs that use it

            self.probe = QualityProbe.for_store(
                settings.store, count=settings.train_config.eval_count, seed=settings.train_config.seed
            )
        self.best_kid = self.folder.best_kid()  # a resumed federation keeps its best
        self.board = Board(settings.run) if settings.train_config.tensorboard else None
        self.extra: Callable[[], dict[str, Any]] = (
            dict  # more state for each round's checkpoint (the server optimiser's)
        )

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
                ROUND: global_round,
                "client": int(m[keys.PARTITION_ID]),
                "node": node,
                "examples": int(m[keys.NUM_EXAMPLES]),
                **(
                    {
                        "steps": int(m[keys.STEPS]),
                        "d_loss": m[keys.D_LOSS],
                        "g_loss": m[keys.G_LOSS],
                        SECONDS: round(float(m[keys.SECONDS]), 3),
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
                    self.folder.ledger,
                    [
                        {
                            ROUND: global_round,
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
            if m.get(keys.GRADIENT_CLIPS):
                line["gradient_clips"] = m[keys.GRADIENT_CLIPS]
                log.warning(
                    "round %d: hospital %s answered above %gx the median per-image gradient norm in %d exchange(s); "
                    "scaled down to that bound",
                    global_round,
                    m[keys.PARTITION_ID],
                    NORM_FACTOR,
                    m[keys.GRADIENT_CLIPS],
                )
            self.lines.append(line)
        for node, reason in failed:
            log.warning("round %d: hospital on node %s left out: %s", global_round, node, reason)
            self.lines.append({ROUND: global_round, "node": node, "failed": reason})
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
        save_fixed_grid(
            self.state,
            self.folder.sample_grid(ROUND, global_round),
            self.settings.train_config.sample_count,
            self.settings.train_config.seed,
        )
        save_checkpoint(
            self.state,
            self.settings.train_config,
            self.folder.checkpoints,
            f"{ROUND}-{global_round:04d}",
            extra={ROUND: global_round, "rounds": self.settings.rounds, **self.extra()},
        )
        prune_checkpoints(self.folder.checkpoints, ROUND, self.settings.train_config.keep_checkpoints)
        seconds = time.perf_counter() - self.round_started
        if self.probe is not None:
            quality = self.probe(self.state)
            self.pending |= quality
            if self.best_kid is None or quality[KID] < self.best_kid:
                self.best_kid = quality[KID]
                save_checkpoint(
                    self.state,
                    self.settings.train_config,
                    self.folder.checkpoints,
                    BEST,
                    extra={ROUND: global_round, "rounds": self.settings.rounds, KID: quality[KID]},
                    latest=False,
                )
        committed = [*self.lines, {ROUND: global_round, AGGREGATE: True, SECONDS: round(seconds, 3), **self.pending}]
        self.folder.append(committed)
        if self.board is not None:
            self.board.lines(committed)
            self.board.grid(self.folder.sample_grid(ROUND, global_round), global_round)
            self.board.flush()
        self.lines = []
        log.info("round %d/%d done in %.1f s: %s", global_round, self.settings.rounds, seconds, self.pending)
        self.round_started = time.perf_counter()


def mean_of(key: str, metrics: list[Mapping[str, Any]]) -> float | None:
    """The mean of one metric over the hospitals that disclosed it; None if none did."""
    values = [float(m[key]) for m in metrics if key in m]
    return float(np.mean(values)) if values else None


def read_ledger(run: Path) -> dict[str, History]:
    """Each hospital's DP history from the run's ledger (empty for a new run)."""
    histories: dict[str, History] = {}
    path = RunFolder(run).ledger
    for line in path.read_text().splitlines() if path.exists() else []:
        entry = json.loads(line)
        histories.setdefault(entry["hospital"], []).append(
            (float(entry["noise"]), float(entry["rate"]), int(entry["steps"]))
        )
    return histories
