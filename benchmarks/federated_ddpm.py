"""Federated DDPM against centralised with the same images seen: which local batch, local epochs
and server algorithm keep quality over label-split hospitals that hold few images each, in one run.
A variant is `central` or `<algorithm>-b<local batch>[-l<local epochs a round>]`.

The demo store over 10 label-split hospitals gives hospitals of 7 to 257 images; a round of 2
local epochs at batches of 32 then averages 12 steps (weighted as FedAvg weights hospitals), so
FedAvg moves the model by a few times fewer sequential steps than the centralised run, and a
DDPM's quality tracks its step count (`fedgan.federation.simulate.local_steps`). This
prints KID and FD (structure space, `--count` images) for each variant beside the centralised run.

    python benchmarks/federated_ddpm.py --store runs/demo/stores/fundus --epochs 12 \\
        --variants central,fedavg-b32,fedavgm-b32,fedavg-b8,fedavgm-b8,fedyogi-b8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from pathlib import Path

from fedgan.config import AlgorithmConfig, DiffusionConfig, TrainConfig
from fedgan.evaluation.evaluate import evaluate_run
from fedgan.federation.simulate import federate
from fedgan.training.recipes import apply_recipe
from fedgan.training.run import train_centralised

VARIANT = re.compile(r"(\w+)-b(\d+)(?:-l(\d+))?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="a prepared, graded store (e.g. the demo's)")
    parser.add_argument("--epochs", type=int, default=12, help="images seen, in epochs of the whole training split")
    parser.add_argument("--clients", type=int, default=10, help="label-split hospitals")
    parser.add_argument("--local-epochs", type=int, default=2, help="local epochs a round, unless a variant says")
    parser.add_argument("--variants", default="central,fedavg-b32,fedavgm-b32,fedavg-b8,fedavgm-b8,fedyogi-b8")
    parser.add_argument("--count", type=int, default=128, help="generated images per evaluation")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-federated-ddpm"))
    args = parser.parse_args()
    if bad := [v for v in args.variants.split(",") if v != "central" and not VARIANT.fullmatch(v)]:
        parser.error(f"--variants: {', '.join(bad)} is not central or <algorithm>-b<batch>[-l<local epochs>]")
    model, train = apply_recipe("ddpm", DiffusionConfig(), TrainConfig(seed=0, sample_count=10))
    rows = []
    for variant in args.variants.split(","):
        run = args.out / variant
        started = time.perf_counter()
        if variant == "central":
            central = dataclasses.replace(train, epochs=args.epochs)
            train_centralised(
                args.store, run, model_config=model, train_config=central, conditional=True, progress=False
            )
        else:
            algorithm, batch, local = VARIANT.fullmatch(variant).groups()
            local_epochs = int(local or args.local_epochs)
            federate(
                args.store,
                run,
                clients=args.clients,
                partition_kind="label-split",
                rounds=args.epochs // local_epochs,
                model_config=model,
                train_config=dataclasses.replace(train, epochs=local_epochs, batch_size=int(batch)),
                conditional=True,
                algorithm=AlgorithmConfig(name=algorithm),
            )
        wall = time.perf_counter() - started
        fidelity = evaluate_run(run, args.store, count=args.count, seed=0, draws=1)["fidelity"]
        rows.append(
            {"variant": variant, "wall_s": wall, "kid": fidelity["kid"]["value"], "fd": fidelity["fd"]["value"]}
        )
        print(json.dumps(rows[-1]), flush=True)
    base = next((r for r in rows if r["variant"] == "central"), None)
    print("\n| variant | wall s | KID | FD | KID / centralised |\n|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['kid'] / base['kid']:.2f}" if base else "-"
        print(f"| {r['variant']} | {r['wall_s']:.0f} | {r['kid']:.3g} | {r['fd']:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
