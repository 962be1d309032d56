"""Federated quality under label skew: each algorithm against centralised training, in one run.

Same store, recipe, model, seed and starting checkpoint for every member; every federation sees
the same images as the centralised baseline (rounds x local epochs = the baseline's epochs).
For each member: KID (structure space, the headline) of the final moving-average generator on
the store's fixed evaluator, with a 95 % interval over generated sets; FD per grade for the
grades held by at most two hospitals; training seconds (the engine's one-time start excluded:
the sum of the rounds' own seconds). Every figure is also printed as a ratio to the baseline.
The grade kappa says whether the images carry the grades they were generated for, as a grader
trained on the real training split reads them (`fedgan.evaluation.probe.grade_agreement`).

    python benchmarks/federated_quality.py --store runs/demo/stores/fundus --clients 3,10 \\
        --algorithms fedavg,mdgan,mdgan+judges=one --epochs 48 --local-epochs 3 \\
        --init runs/demo/runs/ct-pretrain/checkpoints/latest
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from fedgan.config import NUM_GRADES, AlgorithmConfig, GANConfig, TrainConfig, from_dict
from fedgan.data.partition import partition
from fedgan.data.store import Store
from fedgan.evaluation.evaluate import generated_set, per_grade
from fedgan.evaluation.evaluator import HEADLINE, real_trained_grader
from fedgan.evaluation.fidelity import fidelity, over_draws
from fedgan.evaluation.probe import QualityProbe, grade_agreement
from fedgan.federation.simulate import federate
from fedgan.training.checkpoint import read_checkpoint, restore_state
from fedgan.training.grids import save_fixed_grid
from fedgan.training.run import train_centralised


def measure(run: Path, probe: QualityProbe, store: Store, draws: int, seed: int) -> dict:
    state, _ = restore_state(read_checkpoint(run), torch.device("cpu"))
    real_images, real_labels = store.load("train")
    fakes = [generated_set(state, len(real_images), probe.grade_frequencies, seed + draw) for draw in range(draws)]
    headline = over_draws(
        fidelity, probe.real[HEADLINE], [probe.evaluator.embed(images, HEADLINE) for images, _ in fakes]
    )
    grades = per_grade(probe.real[HEADLINE], real_labels, probe.evaluator.embed(fakes[0][0], HEADLINE), fakes[0][1])
    save_fixed_grid(state, run.parent / f"{run.name}.png", 50, seed)
    return {
        "grade_kappa": grade_agreement(real_trained_grader(store.path, probe.evaluator), *fakes[0]),
        "kid": headline["kid"],
        "precision": headline["precision"]["value"],
        "recall": headline["recall"]["value"],
        "grade_fd": {g: v["fd"] for g, v in grades.items()},
    }


def seconds_of(run: Path) -> float:
    """Training seconds: a federation's rounds summed, a centralised run's clock at its last step."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rounds = [x["seconds"] for x in lines if x.get("aggregate")]
    return float(sum(rounds)) if rounds else float(max(x["seconds"] for x in lines if "step" in x and "eval" not in x))


def algorithm(member: str) -> AlgorithmConfig:
    """`name+key=value+...` -> that algorithm with those settings, e.g. `mdgan+judges=one`."""
    name, *overrides = member.split("+")
    return from_dict(AlgorithmConfig, {"name": name, **dict(item.split("=", 1) for item in overrides)})


def holders(store: Store, clients: int, seed: int) -> list[int]:
    """How many hospitals hold each grade under label-split."""
    labels = store.labels("train")
    parts = partition(labels, clients, "label-split", seed)
    return [sum(int((labels[p] == g).any()) for p in parts) for g in range(NUM_GRADES)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--clients", default="3,10", help="federation sizes (label-split)")
    parser.add_argument(
        "--algorithms",
        default="fedavg,fedadam,fedprox,mdgan",
        help="comma-separated members, each a name with optional +key=value settings (mdgan+judges=one)",
    )
    parser.add_argument(
        "--epochs", type=int, default=48, help="the baseline's epochs = rounds x local epochs of each federation"
    )
    parser.add_argument("--local-epochs", type=int, default=3)
    parser.add_argument("--init", type=Path, help="starting checkpoint for every member (e.g. CT pretraining)")
    parser.add_argument("--generator-width", type=int, default=256)
    parser.add_argument("--discriminator-width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--balance-grades", action="store_true", help="every member draws each grade equally often (--balance-grades)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-federated"))
    parser.add_argument(
        "--reprint", action="store_true", help="print the table of the results already in --out, training nothing"
    )
    args = parser.parse_args()
    store = Store(args.store)
    if args.reprint:
        results = json.loads((args.out / "results.json").read_text())
        for r in results:
            r["seconds"] = seconds_of(
                args.out / ("central" if r["member"] == "centralised" else f"{r['member']}-{r['clients']}")
            )
        print_table(results, store, args)
        return
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    probe = QualityProbe.for_store(args.store, seed=args.seed)
    model = GANConfig(generator_width=args.generator_width, discriminator_width=args.discriminator_width)
    results = []
    started = time.perf_counter()
    central = train_centralised(
        args.store,
        args.out / "central",
        model_config=model,
        conditional=True,
        init=args.init,
        progress=False,
        train_config=TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, balance_grades=args.balance_grades
        ),
    )
    del central
    results.append(
        {
            "member": "centralised",
            "clients": 1,
            "seconds": seconds_of(args.out / "central"),
            **measure(args.out / "central", probe, store, args.draws, args.seed),
        }
    )
    print(f"centralised done in {time.perf_counter() - started:.0f} s", flush=True)
    rounds = args.epochs // args.local_epochs
    for clients in map(int, args.clients.split(",")):
        for name in args.algorithms.split(","):
            run = args.out / f"{name}-{clients}"
            federate(
                args.store,
                run,
                clients=clients,
                partition_kind="label-split",
                rounds=rounds,
                model_config=model,
                train_config=TrainConfig(
                    epochs=args.local_epochs,
                    batch_size=args.batch_size,
                    seed=args.seed,
                    balance_grades=args.balance_grades,
                ),
                conditional=True,
                init=args.init,
                algorithm=algorithm(name),
            )
            results.append(
                {
                    "member": name,
                    "clients": clients,
                    "seconds": seconds_of(run),
                    **measure(run, probe, store, args.draws, args.seed),
                }
            )
            print(f"{name} x {clients} done at {time.perf_counter() - started:.0f} s", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results, store, args)


def print_table(results: list[dict], store: Store, args: argparse.Namespace) -> None:
    base = results[0]
    print(
        f"\nstore {args.store}, label-split, {args.epochs} epochs of images seen by each member, G "
        f"{args.generator_width} / "
        f"D {args.discriminator_width}, batch {args.batch_size}, {torch.get_num_threads()} threads"
        + (", balanced grades" if args.balance_grades else "")
    )
    print(
        f"{'member':<12} {'clients':>7} {'KID (structure) [95 %]':>30} {'KID/central':>11} {'prec':>5} {'rec':>5} "
        f"{'rare-grade FD/central':>30} {'seconds':>8} {'time/central':>12} {'grade kappa':>11}"
    )
    for r in results:
        few = [g for g, n in enumerate(holders(store, r["clients"], args.seed)) if n <= 2] if r["clients"] > 1 else []
        rare = " ".join(
            f"g{g}:{r['grade_fd'][str(g)] / base['grade_fd'][str(g)]:.2f}"
            for g in few
            if str(g) in r["grade_fd"] and str(g) in base["grade_fd"]
        )
        kid = r["kid"]
        print(
            f"{r['member']:<12} {r['clients']:>7} {kid['value']:>10.3g} [{kid['low']:.3g}, {kid['high']:.3g}]".ljust(52)
            + f" {kid['value'] / base['kid']['value']:>11.2f} {r['precision']:>5.2f} {r['recall']:>5.2f} {rare:>30} "
            f"{r['seconds']:>8.0f} {r['seconds'] / base['seconds']:>12.2f} {r.get('grade_kappa', float('nan')):>11.3f}"
        )
    print(f"sample grids in {args.out}/*.png")


if __name__ == "__main__":
    main()
