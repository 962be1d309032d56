"""What a federation leaves in its run folder: per-hospital and per-round lines, checkpoints,
sample grids, the in-training KID, and the DP ledger."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedgan.config import NUM_GRADES
from fedgan.federation import keys
from fedgan.federation.settings import FederationSettings
from fedgan.federation.weights import load_global_weights
from fedgan.training.checkpoint import BEST, prune_checkpoints, save_checkpoint
from fedgan.training.loop import new_state
from fedgan.training.privacy import History, epsilon
from fedgan.training.samples import save_samples

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
