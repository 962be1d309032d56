"""Fault injection: a 10-hospital federation with crashing, slow and hostile hospitals, in one run.

Each case runs the real ServerApp logic and the real ClientApp in one process, without an engine
(`inprocess.run_in_process`), with some hospitals replaced by the faults of `inprocess.FAULTS`. The
coordinator-kill case runs `fedgan federate` on Flower's simulation engine in a subprocess, SIGKILLs
it in the middle of round 2, and resumes it.

For each case: did the run finish, how far its final model is from the run without faults, and
how far from the run in which the same hospitals simply crash (0: the attack changed nothing
beyond losing that hospital, i.e. nothing was poisoned), and what metrics.jsonl said. Distances
are L2 over both networks, relative to how far the fault-free run moved from the start.

    python benchmarks/faults.py --scratch /tmp/fedgan-faults
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fedgan.config import AGGREGATIONS, AlgorithmConfig, GANConfig, PreprocessConfig, StoreConfig, TrainConfig
from fedgan.data.prepare import prepare_store
from fedgan.data.sources.synth_sets import write_fundus_set
from fedgan.data.store import Store
from fedgan.federation.failures import RoundFailed
from fedgan.federation.inprocess import FAULTS, SLOW_SECONDS, Fault, run_in_process
from fedgan.federation.settings import FederationSettings, SecAggSettings
from fedgan.federation.simulate import with_partition_sizes
from fedgan.federation.weights import global_weights
from fedgan.training.checkpoint import read_checkpoint
from fedgan.training.loop import new_state

HOSPITALS, ROUNDS = 10, 3
MODEL = GANConfig(resolution=32, generator_width=64, discriminator_width=16, latent_dim=32)
LOCAL = TrainConfig(epochs=1, batch_size=8, seed=0, sample_count=16)
TIMEOUT = SLOW_SECONDS - 1  # the slow hospital answers after the round's deadline


def flower_task() -> None:
    """Flower builds messages only inside a run; the ServerApp's process sets this."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        setattr(TaskIdentity, name, 1)


def make_store(scratch: Path) -> Path:
    store = scratch / "store"
    if not store.exists():
        write_fundus_set(scratch / "photos", count=240, size=128, seed=5, workers=2, progress=False)
        prepare_store(
            scratch / "photos",
            store,
            preprocess_config=PreprocessConfig(size=32),
            store_config=StoreConfig(heldout_fraction=0),
            workers=2,
            progress=False,
        )
    return store


def weights(run: Path) -> np.ndarray:
    data = read_checkpoint(run)
    return np.concatenate(
        [
            v.float().numpy().ravel()
            for net in ("generator", "discriminator")
            for v in data[net].values()
            if v.is_floating_point()
        ]
    )


def in_process(store: Path, run: Path, faults: dict[int, Fault], secagg: bool, aggregation: str = "mean") -> dict:
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    settings = FederationSettings(
        store,
        run,
        HOSPITALS,
        "iid",
        ROUNDS,
        MODEL,
        LOCAL,
        round_timeout=TIMEOUT,
        algorithm=AlgorithmConfig(aggregation=aggregation),
    )
    settings = with_partition_sizes(Store(store), settings, SecAggSettings() if secagg else None)
    started, error = time.perf_counter(), ""
    try:
        run_in_process(settings, global_weights(new_state(MODEL, LOCAL, torch.device("cpu"))), 0, faults=faults)
    except RoundFailed as exc:
        error = str(exc)
    return summary(run, time.perf_counter() - started, error)


def summary(run: Path, seconds: float, error: str = "") -> dict:
    lines = (
        [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        if (run / "metrics.jsonl").exists()
        else []
    )
    aggregates = [x for x in lines if x.get("aggregate")]
    reasons = sorted({x["failed"] for x in lines if "node" in x and "failed" in x})
    return {
        "finished": len(aggregates) == ROUNDS and not error,
        "rounds": len(aggregates),
        "seconds": round(seconds, 1),
        "hospitals": [x["clients"] for x in aggregates],
        "log": error or "; ".join(reasons) or "-",
        "run": str(run),
    }


def killed_and_resumed(store: Path, scratch: Path) -> tuple[dict, float]:
    """`fedgan federate` SIGKILLed mid-round, resumed, against the same run uninterrupted.

    Returns the resumed run's summary and the largest absolute weight difference."""
    common = [
        "--store",
        str(store),
        "--clients",
        str(HOSPITALS),
        "--partition",
        "iid",
        "--rounds",
        str(ROUNDS),
        "--epochs",
        "1",
        "--generator-width",
        str(MODEL.generator_width),
        "--discriminator-width",
        str(MODEL.discriminator_width),
        "--latent-dim",
        str(MODEL.latent_dim),
        "--batch-size",
        str(LOCAL.batch_size),
        "-q",
    ]
    fedgan = [sys.executable, "-m", "fedgan", "federate"]
    straight, killed = scratch / "uninterrupted", scratch / "killed"
    for run in (straight, killed):
        shutil.rmtree(run, ignore_errors=True)
    subprocess.run([*fedgan, *common, "--out", str(straight)], check=True, capture_output=True, timeout=900)
    process = subprocess.Popen(
        [*fedgan, *common, "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while not (killed / "checkpoints" / "round-0001.pt").exists():
        time.sleep(0.2)
    time.sleep(1.0)  # into round 2
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_when_killed = read_checkpoint(killed)["extra"]["round"]
    started = time.perf_counter()
    resumed = subprocess.run([*fedgan, "--resume", str(killed), "-q"], capture_output=True, text=True, timeout=900)
    result = summary(
        killed, time.perf_counter() - started, "" if resumed.returncode == 0 else resumed.stderr.strip()[-200:]
    )
    lines = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    repeated = len(lines) - len({(x.get("round"), x.get("client"), x.get("node"), x.get("aggregate")) for x in lines})
    result["log"] = f"killed after round {done_when_killed} was saved; resumed; {repeated} repeated metrics lines"
    return result, float(np.abs(weights(killed) - weights(straight)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/fedgan-faults"))
    parser.add_argument(
        "--skip-kill", action="store_true", help="leave out the coordinator-kill case (two engine runs)"
    )
    args = parser.parse_args()
    flower_task()
    store = make_store(args.scratch)
    start = np.concatenate(
        [
            v.numpy().ravel()
            for k, v in global_weights(new_state(MODEL, LOCAL, torch.device("cpu"))).items()
            if not k.startswith("generator_ema.")
        ]
    )
    rows: list[tuple[str, dict, str, str]] = []
    base = {secure: in_process(store, args.scratch / f"base-{secure}", {}, secure) for secure in (False, True)}
    moved = {secure: float(np.linalg.norm(weights(Path(base[secure]["run"])) - start)) for secure in (False, True)}

    def distance(a: dict, b: dict, secure: bool) -> str:
        if not (a["rounds"] and b["rounds"]):
            return "-"
        return f"{np.linalg.norm(weights(Path(a['run'])) - weights(Path(b['run']))) / moved[secure]:.3g}"

    for secure in (False, True):
        rows.append((f"no fault{' (SecAgg+)' if secure else ''}", base[secure], "0", "-"))
        for count in (1, 3, 5):
            crash = in_process(
                store,
                args.scratch / f"crash{count}-{secure}",
                dict.fromkeys(range(HOSPITALS, HOSPITALS - count, -1), FAULTS["crash"]),
                secure,
            )
            rows.append(
                (
                    f"{count} crash mid-round{' (SecAgg+)' if secure else ''}",
                    crash,
                    distance(crash, base[secure], secure),
                    "-",
                )
            )
    crashed_one = in_process(store, args.scratch / "crash-node-10", {HOSPITALS: FAULTS["crash"]}, False)
    for fault in ("nan", "scaled-1e6", "wrong-shape", "extra-key", "inflated-weight", "slow"):
        result = in_process(store, args.scratch / fault, {HOSPITALS: FAULTS[fault]}, False)
        rows.append(
            (
                f"{fault} reply from 1 hospital",
                result,
                distance(result, base[False], False),
                distance(result, crashed_one, False),
            )
        )
    for aggregation in AGGREGATIONS:  # robust aggregation: its cost on honest hospitals, and a within-bound attack
        honest = in_process(store, args.scratch / f"{aggregation}-honest", {}, False, aggregation)
        attacked = in_process(
            store, args.scratch / f"{aggregation}-attacked", {HOSPITALS: FAULTS["scaled-5x"]}, False, aggregation
        )
        rows.append((f"--aggregation {aggregation}, no fault", honest, distance(honest, base[False], False), "-"))
        rows.append(
            (
                f"--aggregation {aggregation}, 1 hospital sends 5x its update",
                attacked,
                distance(attacked, base[False], False),
                f"vs its own fault-free run: {distance(attacked, honest, False)}",
            )
        )
    if not args.skip_kill:
        result, difference = killed_and_resumed(store, args.scratch)
        rows.append(
            ("coordinator SIGKILLed mid-round, resumed", result, f"max |w - uninterrupted| {difference:.3g}", "-")
        )
    print(
        f"{HOSPITALS} hospitals, IID, {ROUNDS} rounds, {MODEL.resolution} px; round timeout {TIMEOUT:g} s; distances "
        "relative to "
        "the fault-free run's movement from the start\n"
    )
    print("| case | finished | hospitals per round | vs no fault | vs same hospitals crashing | what the log said |")
    print("|---|---|---|---|---|---|")
    for name, result, versus_base, versus_crash in rows:
        print(
            f"| {name} | {'yes' if result['finished'] else 'NO'} ({result['rounds']}/{ROUNDS}) | "
            f"{result['hospitals']} | "
            f"{versus_base} | {versus_crash} | {result['log'][:160]} |"
        )


if __name__ == "__main__":
    main()
