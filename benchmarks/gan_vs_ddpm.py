"""GAN against DDPM on one store at one training budget, centralised and federated, in one run.

Each kind of model trains centrally for whole epochs until `--budget` seconds of training are
spent (the product's own `fedgan train` path: the first epoch measures the pace, the run then
resumes to the number of epochs the budget buys). Each is then federated over `--clients`
label-split hospitals with the same images seen (rounds x local epochs = its centralised epochs),
through the simulation engine. Every run is measured alike:

- KID, FD, precision and recall on the store's fixed evaluator (structure space, the headline),
  means over `--draws` generated sets with 95 % intervals; TSTR kappa (a grader trained on
  generated images, tested on real held-out ones);
- sampling seconds per 1,000 images (DDIM with the model's sample steps for the DDPM);
- membership inference (`fedgan audit`: train split against held-out split): GAN-Leaks AUC and
  the white-box AUC (LOGAN on the GAN's discriminator, the denoising loss on the DDPM's UNet).

    python benchmarks/gan_vs_ddpm.py --store runs/demo/stores/fundus --budget 300 --out runs/bench-gan-ddpm
    python benchmarks/gan_vs_ddpm.py --store runs/demo/stores/fundus --models ddpm --algorithm fedavgm --local-batch 8

The GAN is the demo's (quarter widths, small-data recipe); the DDPM is `DiffusionConfig`'s
default with the `ddpm` recipe. Neither is pretrained on CT here, so the budget is all they get.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedgan.config import NUM_GRADES, AlgorithmConfig, DiffusionConfig, GANConfig, ModelConfig, TrainConfig
from fedgan.evaluation.evaluate import evaluate_run, generated_set
from fedgan.evaluation.privacy import ATTACKS, audit
from fedgan.evaluation.results import FIDELITY, SYNTHETIC_TRAINED, UTILITY
from fedgan.federation.simulate import federate
from fedgan.runfolder import RunFolder
from fedgan.training.recipes import apply_recipe
from fedgan.training.run import resume_centralised, train_centralised
from fedgan.training.trained import load_trained


def training_seconds(run: Path) -> float:
    """Seconds spent in training steps (grids, checkpoints and evaluation excluded), from the run's metrics."""
    return max(line.get("seconds", 0.0) for line in RunFolder(run).lines())


def centralised(
    store: Path, run: Path, model: ModelConfig, train: TrainConfig, budget: float, epochs: int
) -> tuple[int, float]:
    """Whole epochs until `budget` training seconds are spent, or `epochs` if given; (epochs, wall seconds)."""
    started = time.perf_counter()
    train_centralised(
        store, run, model_config=model, train_config=train, conditional=True, progress=False, stop_after_epochs=1
    )
    epochs = epochs or max(1, math.floor(budget / training_seconds(run)))
    if epochs > 1:
        resume_centralised(run, epochs=epochs, progress=False)
    return epochs, time.perf_counter() - started


def federated(
    store: Path, run: Path, model: ModelConfig, train: TrainConfig, epochs: int, args: argparse.Namespace
) -> tuple[int, float]:
    """The same images seen as `epochs` centralised epochs: rounds x local epochs; (rounds, wall seconds)."""
    local = args.local_epochs
    rounds = max(1, round(epochs / local))
    started = time.perf_counter()
    federate(
        store,
        run,
        clients=args.clients,
        partition_kind="label-split",
        rounds=rounds,
        model_config=model,
        train_config=dataclasses.replace(train, epochs=local, batch_size=args.local_batch or train.batch_size),
        conditional=True,
        algorithm=AlgorithmConfig(name=args.algorithm),
    )
    return rounds, time.perf_counter() - started


def sampling_seconds_per_1000(run: Path, count: int) -> float:
    trained = load_trained(run)
    started = time.perf_counter()
    generated_set(trained, count, np.full(NUM_GRADES, 1 / NUM_GRADES) if trained.model_config.conditional else None, 0)
    return (time.perf_counter() - started) / count * 1000


def measure(run: Path, store: Path, args: argparse.Namespace) -> dict[str, Any]:
    result = evaluate_run(run, store, count=args.count, seed=args.seed, draws=args.draws)
    privacy = audit(run, store, Path(f"{store}:heldout"), samples=args.count, seed=args.seed)
    white_box = next(name for name in ATTACKS if name != "gan_leaks" and name in privacy)
    return {
        **{key: result[FIDELITY][key] for key in ("kid", "fd", "precision", "recall")},
        "tstr_kappa": result[UTILITY][SYNTHETIC_TRAINED]["kappa"],
        "real_kappa": result[UTILITY]["real_trained"]["kappa"],
        "sampling_s_per_1000": sampling_seconds_per_1000(run, args.count),
        "mia_gan_leaks_auc": privacy["gan_leaks"]["auc"],
        "mia_white_box_auc": privacy[white_box]["auc"],
        "white_box": white_box,
    }


def interval(metric: dict[str, float]) -> str:
    return f"{metric['value']:.3g} [{metric['low']:.3g}, {metric['high']:.3g}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="a prepared, graded store (e.g. the demo's)")
    parser.add_argument("--budget", type=float, default=300, help="centralised training seconds per model")
    parser.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="centralised epochs instead of what the budget buys (0): to repeat an earlier run with another --seed, "
        "since the pace measured in the first epoch varies with the machine's load",
    )
    parser.add_argument("--clients", type=int, default=10, help="label-split hospitals of the federated runs")
    parser.add_argument("--local-epochs", type=int, default=2, help="local epochs per round")
    parser.add_argument("--algorithm", default="fedavg", help="how the federated runs combine hospitals")
    parser.add_argument(
        "--local-batch",
        type=int,
        default=0,
        help="batch size at the hospitals (0: the centralised run's); hospitals with few images need small batches",
    )
    parser.add_argument("--count", type=int, default=256, help="generated images per evaluation set and audit")
    parser.add_argument("--draws", type=int, default=3, help="generated sets for the intervals")
    parser.add_argument("--models", default="gan,ddpm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-gan-ddpm"))
    args = parser.parse_args()
    base = TrainConfig(seed=args.seed, sample_count=10)
    models = {  # the GAN as the demo trains it (quarter widths, batches of 32); the DDPM with its own recipe
        "gan": apply_recipe(
            "small-data",
            GANConfig(generator_width=256, discriminator_width=32),
            dataclasses.replace(base, batch_size=32),
        ),
        "ddpm": apply_recipe("ddpm", DiffusionConfig(), base),
    }
    rows = []
    for kind in args.models.split(","):
        model, train = models[kind]
        central, fed = args.out / f"{kind}-centralised", args.out / f"{kind}-clients-{args.clients}"
        for run in (central, fed):
            shutil.rmtree(run, ignore_errors=True)
        epochs, central_wall = centralised(args.store, central, model, train, args.budget, args.epochs)
        rounds, fed_wall = federated(args.store, fed, model, train, epochs, args)
        for run, setting, wall in (
            (central, "centralised", central_wall),
            (fed, f"{args.clients} hospitals", fed_wall),
        ):
            rows.append(
                {
                    "model": kind,
                    "setting": setting,
                    "epochs": epochs,
                    "rounds": rounds if run == fed else None,
                    "train_s": training_seconds(run) if run == central else None,
                    "wall_s": wall,
                    **measure(run, args.store, args),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print(
        f"\nstore {args.store}: "
        + (f"{args.epochs} centralised epochs" if args.epochs else f"{args.budget:.0f} s of centralised training")
        + " per model; federations see the same "
        f"images ({args.clients} label-split hospitals, {args.algorithm}, {args.local_epochs} local epochs a round"
        f"{f' at batches of {args.local_batch}' if args.local_batch else ''}); {args.draws} "
        f"generated sets of {args.count} per evaluation; {torch.get_num_threads()} threads\n"
    )
    header = "| model | setting | epochs | wall s | KID | FD | precision | recall | TSTR κ | s / 1000 samples | "
    print(header + "MIA AUC black-box | MIA AUC white-box |")
    print("|" + "---|" * 12)
    for r in rows:
        print(
            f"| {r['model']} | {r['setting']} | {r['epochs']} | {r['wall_s']:.0f} | {interval(r['kid'])} | "
            f"{interval(r['fd'])} | {r['precision']['value']:.2f} | {r['recall']['value']:.2f} | "
            f"{r['tstr_kappa']:.2f} | {r['sampling_s_per_1000']:.1f} | {interval(r['mia_gan_leaks_auc'])} | "
            f"{interval(r['mia_white_box_auc'])} ({r['white_box']}) |"
        )
    for kind in dict.fromkeys(r["model"] for r in rows):
        central, fed = (r for r in rows if r["model"] == kind)
        print(
            f"{kind}: federated / centralised KID {fed['kid']['value'] / central['kid']['value']:.2f}, wall time "
            f"{fed['wall_s'] / central['wall_s']:.2f}"
        )
    print(f"real-trained grader κ {rows[0]['real_kappa']:.2f}; runs and grids in {args.out}")


if __name__ == "__main__":
    main()
