"""What `--wire fp16` costs in quality and saves in bytes, measured in one run.

Two federations from the same seed, store and settings, one with float32 replies and one with
each hospital's update in float16. Prints, per member, the final and best per-round KID, the
largest difference between the two final global models, and the bytes each hospital sent per
round. The goal (issue: "half precision where the quality loss is measured as nil"): the fp16
KID within the spread of KID between consecutive rounds of the fp32 run.

    python benchmarks/wire_precision.py --store runs/demo/stores/fundus \
        --init runs/demo/runs/ct-pretrain/checkpoints/latest --out /tmp/wire
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fedgan.config import AlgorithmConfig, GANConfig, TrainConfig
from fedgan.federation.simulate import federate
from fedgan.runfolder import RunFolder
from fedgan.training.checkpoint import read_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="scratch folder for the two runs")
    parser.add_argument("--init", type=Path)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3, help="local epochs per round")
    args = parser.parse_args()
    model = GANConfig(generator_width=256, discriminator_width=32)  # the demo's quarter width
    train = TrainConfig(epochs=args.epochs, batch_size=32, eval_every=1, sample_count=50)
    rows = []
    for wire in ("fp32", "fp16"):
        run = args.out / wire
        if not RunFolder(run).has_run():
            federate(
                args.store,
                run,
                clients=args.clients,
                rounds=args.rounds,
                model_config=model,
                train_config=train,
                conditional=True,
                init=args.init,
                algorithm=AlgorithmConfig(wire=wire),
            )
        folder = RunFolder(run)
        kids = [line["kid"] for line in folder.quality()]
        sent = [line["bytes_sent"] for line in folder.lines() if "client" in line]
        rows.append((wire, kids, float(np.mean(sent)), read_checkpoint(run)))
    (_, exact_kids, exact_bytes, exact), (_, half_kids, half_bytes, half) = rows
    difference = max(
        float((half[net][k].float() - v.float()).abs().max())
        for net in ("generator", "discriminator")
        for k, v in exact[net].items()
        if v.is_floating_point()
    )
    spread = float(np.mean(np.abs(np.diff(exact_kids[-3:])))) if len(exact_kids) > 2 else float("nan")
    print(f"{args.clients} hospitals, label-split, {args.rounds} rounds x {args.epochs} local epochs, fedavg")
    print(f"{'wire':<6} {'final KID':>10} {'best KID':>9} {'bytes sent / hospital / round':>30}")
    for wire, kids, sent, _ in rows:
        print(f"{wire:<6} {kids[-1]:>10.3g} {min(kids):>9.3g} {sent:>30,.0f}")
    print(f"fp16 / fp32: final KID {half_kids[-1] / exact_kids[-1]:.3f}, bytes {half_bytes / exact_bytes:.3f}")
    print(f"fp32 run's KID change between its last rounds (mean |delta|): {spread:.3g}")
    print(f"largest difference between the two final global models: {difference:.3g}")


if __name__ == "__main__":
    main()
