"""What Flower's simulation engine adds to a round of mdgan's many short exchanges.

A round of `mdgan` is dozens of exchanges (one per `--pack` generator steps), and on Flower's
simulation engine each one waits for the engine twice: until its worker thread picks the messages
up (Flower polls every 0.1 s) and until the grid sees the replies (the grid's `pull_interval`,
0.1 s by default, which `fedgan.federation.server_app.PULL_INTERVAL` lowers). This runs the same
one-round federation with the grid at Flower's default and at ours, alternately, and prints each
round's seconds, the hospitals' own seconds within it, and what is left per exchange: the server's
generator steps plus the engine's waits.

    python benchmarks/engine_wait.py --store runs/demo/stores/fundus [--repeats 2] [--epochs 1]

Defaults are the demo's federation (3 label-split hospitals, quarter widths, batches of 16).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from fedgan.config import AlgorithmConfig, GANConfig, TrainConfig
from fedgan.federation import server_app
from fedgan.federation.simulate import federate

FLOWER_DEFAULT = 0.1


def one_round(store: Path, run: Path, args: argparse.Namespace) -> tuple[float, float, int]:
    """(round seconds, the hospitals' seconds summed, exchanges) of a fresh one-round federation."""
    federate(
        store,
        run,
        clients=args.clients,
        partition_kind="label-split",
        rounds=1,
        model_config=GANConfig(generator_width=256, discriminator_width=32),
        train_config=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=0, eval_every=0),
        conditional=True,
        algorithm=AlgorithmConfig("mdgan", pack=args.pack),
    )
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    total = next(line for line in lines if line.get("aggregate"))
    hospitals = sum(line["seconds"] for line in lines if "client" in line)
    images = sum(line["examples"] for line in lines if "client" in line)
    steps = max(1, args.epochs * (images // args.batch_size))  # a round's generator steps, as split_server counts them
    return total["seconds"], hospitals, math.ceil(steps / args.pack)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pack", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting, alternating")
    args = parser.parse_args()
    rows: dict[float, list[tuple[float, float, int]]] = {FLOWER_DEFAULT: [], server_app.PULL_INTERVAL: []}
    ours = server_app.PULL_INTERVAL
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for interval in rows:
                server_app.PULL_INTERVAL = interval  # the ServerApp runs in this process on the simulation engine
                rows[interval].append(one_round(args.store, Path(scratch) / f"{interval}-{repeat}", args))
    server_app.PULL_INTERVAL = ours
    print(f"{'grid pull interval':>18} {'round s':>8} {'hospitals s':>12} {'exchanges':>10} {'rest per exchange':>18}")
    for interval, results in rows.items():
        for seconds, hospitals, exchanges in results:
            print(
                f"{interval:>18} {seconds:8.1f} {hospitals:12.1f} {exchanges:10d} "
                f"{(seconds - hospitals) / exchanges * 1000:15.0f} ms"
            )
    best = {interval: min(r[0] for r in results) for interval, results in rows.items()}
    print(f"fastest round, ours / Flower's default: {best[ours] / best[FLOWER_DEFAULT]:.2f}")


if __name__ == "__main__":
    main()
