"""Federated vs centralised training time for the same images, measured in one run.

Prepares a 64 px store from procedural fundus photographs, then pushes the same total number of
images through (a) centralised training for R epochs and (b) 3- and 10-hospital federations for
R rounds of 1 local epoch (IID partitions, so every hospital's share sums to the same images).
Centralised training is timed again just before each federation, and each ratio uses that pass.
Prints wall time, per-round time, the one-time start (engine, hospital processes, first data
load: the first round minus a steady round) and the ratio federated/centralised for all rounds
and for steady rounds. Each federation runs again with SecAgg+ (same hospitals, same images), and
the extra time of a steady secure round is printed as a share of that round.

    python benchmarks/federation_throughput.py [--images 480] [--rounds 3] [--clients 3,10] \\
        [--client-cpus 0] [--wire fp32|fp16] [--no-secagg]

Goals: ratio <= 1.10; SecAgg+ <= 15 % of round time.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from fedgan.config import WIRES, AlgorithmConfig, GANConfig, PreprocessConfig, StoreConfig, TrainConfig
from fedgan.data.prepare import prepare_store
from fedgan.data.sources.synth_sets import write_fundus_set
from fedgan.federation.settings import SecAggSettings
from fedgan.federation.simulate import federate
from fedgan.training.run import train_centralised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=480, help="training images (the store holds 5/4 of this)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="3,10")
    parser.add_argument("--batch-size", type=int, default=16, help="the paper's 16")
    parser.add_argument("--client-cpus", type=int, default=0, help="cores per hospital (0: all, hospitals take turns)")
    parser.add_argument("--wire", choices=WIRES, default="fp32", help="how hospitals send their models back")
    parser.add_argument("--no-secagg", dest="secagg", action="store_false", help="skip the SecAgg+ runs")
    args = parser.parse_args()
    if args.wire != "fp32" and args.secagg:
        parser.error("SecAgg+ sums float32 weights: --wire fp16 needs --no-secagg")
    logging.getLogger("flwr").setLevel(logging.WARNING)
    train = TrainConfig(epochs=args.rounds, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        write_fundus_set(tmp_path / "raw", count=args.images * 5 // 4, size=256, progress=False)
        prepare_store(
            tmp_path / "raw",
            tmp_path / "store",
            preprocess_config=PreprocessConfig(size=64),
            store_config=StoreConfig(),
            progress=False,
        )
        for clients in (int(c) for c in args.clients.split(",")):
            central = centralised(tmp_path, clients, train)
            print(f"centralised, just before: {args.rounds} epochs over {args.images} images in {central:.1f} s")
            wall, rounds = federation(tmp_path, clients, args, secagg=None)
            steady = sum(rounds[1:]) / max(len(rounds) - 1, 1)  # rounds after the first: processes warm, data cached
            warm_up = wall - steady * len(rounds)  # engine start + first-round process start and data loading
            print(f"{clients:>2} hospitals: wall {wall:.1f} s, rounds {' + '.join(f'{r:.1f}' for r in rounds)} s")
            print(f"    one-time start (engine, hospital processes, data loading): {warm_up:.1f} s")
            print(
                f"    ratio federated/centralised per pass over the data: all rounds {sum(rounds) / central:.2f}x, "
                f"steady rounds {steady * args.rounds / central:.2f}x (goal <= 1.10)"
            )
            if args.secagg:
                _, secure = federation(tmp_path, clients, args, secagg=SecAggSettings())
                secure_steady = sum(secure[1:]) / max(len(secure) - 1, 1)
                print(
                    f"    SecAgg+: steady round {secure_steady:.1f} s vs {steady:.1f} s plain: "
                    f"{(secure_steady - steady) / secure_steady:.0%} of the secure round (goal <= 15 %)"
                )


def centralised(tmp_path: Path, clients: int, train: TrainConfig) -> float:
    """Seconds of centralised training, timed again before each federation: this machine's speed drifts
    by a fifth within minutes (docs/federation.md), so a ratio to a pass timed long before says little."""
    started = time.perf_counter()
    run = tmp_path / f"central-{clients}"
    train_centralised(tmp_path / "store", run, model_config=GANConfig(), train_config=train, progress=False)
    return time.perf_counter() - started


def federation(
    tmp_path: Path, clients: int, args: argparse.Namespace, secagg: SecAggSettings | None
) -> tuple[float, list[float]]:
    """Wall time and per-round seconds of one simulated federation over the store."""
    run = (
        tmp_path / f"fed{clients}{'-secure' if secagg else ''}"
    )  # GANConfig(): the paper's widths, 64 px from the store
    started = time.perf_counter()
    federate(
        tmp_path / "store",
        run,
        clients=clients,
        partition_kind="iid",
        rounds=args.rounds,
        model_config=GANConfig(),
        train_config=TrainConfig(epochs=1, batch_size=args.batch_size),
        client_cpus=args.client_cpus,
        secagg=secagg,
        algorithm=AlgorithmConfig(wire=args.wire),
    )
    wall = time.perf_counter() - started
    return wall, [
        json.loads(line)["seconds"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"aggregate"' in line
    ]


if __name__ == "__main__":
    main()
