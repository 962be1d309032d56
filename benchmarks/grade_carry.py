"""Where a conditional GAN loses the grade: step-budgeted runs of recipe variants, in one run.

Each variant trains the same model on the same store from the same seed for `--steps` steps (a
step budget, so machine load changes the seconds but not the figures). At each of `--eval-at`:
- structure KID (the headline) from the in-training probe, and structure precision, recall and
  coverage and the pixel spread across samples (relative to real images) on 2,001-ish samples;
- grade kappa: a grader trained on the real training split reads the samples' grades (GAN-test);
- head kappa: the discriminator's own grade head (`grade_head`) reads the real test half's grades,
  which says whether D's grade signal is worth following;
- TSTR kappa: a grader trained on the samples (the data's grade frequencies, and a balanced set of
  twice the size) is tested on the real test half.
Variants are `recipe+key=value+...` as in `recipe_quality.py`.

    python benchmarks/grade_carry.py --store STORE2000 --steps 4500 --eval-at 1500,3000,4500 \\
        --recipes small-data+grade_head=true+balance_grades=true,graded
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from recipe_quality import store_configs

from fedgan.config import NUM_GRADES
from fedgan.data.store import Store
from fedgan.evaluation.evaluate import generated_set
from fedgan.evaluation.evaluator import heldout_halves, real_trained_grader, score
from fedgan.evaluation.fidelity import prdc
from fedgan.evaluation.grader import train_grader
from fedgan.evaluation.kappa import quadratic_weighted_kappa
from fedgan.evaluation.probe import QualityProbe, grade_agreement
from fedgan.training.data import InMemory
from fedgan.training.grids import save_fixed_grid
from fedgan.training.loop import GANState, new_state, train_step


def head_kappa(state: GANState, images: np.ndarray, grades: np.ndarray) -> float | None:
    """Quadratic kappa of D's grade head on real images, or None without a head."""
    if not state.model_config.has_grade_head:
        return None
    discriminator = state.discriminator.eval()
    with torch.no_grad():
        read = [
            discriminator.logits_and_grades(
                torch.from_numpy(images[i : i + 256]), torch.from_numpy(grades[i : i + 256])
            )[1]
            .argmax(1)
            .numpy()
            for i in range(0, len(images), 256)
        ]
    discriminator.train()
    return quadratic_weighted_kappa(grades, np.concatenate(read))


def run(variant: str, store_path: Path, probe: QualityProbe, args: argparse.Namespace) -> list[dict]:
    store = Store(store_path)
    model, train = store_configs(variant, store, args, args.seed)
    images, grades = store.load("train")
    frequencies = np.bincount(grades, minlength=NUM_GRADES) / len(grades)
    data = InMemory(torch.from_numpy(images), torch.from_numpy(grades))
    _, test = heldout_halves(store)
    test_images, test_grades = store.load("heldout", test)
    judge = real_trained_grader(store_path, probe.evaluator)
    state = new_state(model, train, torch.device("cpu"))
    began, rows = time.perf_counter(), []
    while state.step < args.steps:
        for real, labels in data.batches(train.seed, state.epoch, train.batch_size, train.balance_grades):
            train_step(state, real, labels, train)
            if state.step in args.eval_at:
                fakes, asked = generated_set(state, len(images), frequencies, args.seed + 1)
                balanced, even = generated_set(
                    state, 2 * len(images), np.full(NUM_GRADES, 1 / NUM_GRADES), args.seed + 2
                )
                fit = prdc(probe.real["structure"], probe.evaluator.embed(fakes, "structure"))
                row = {
                    "variant": variant,
                    "step": state.step,
                    "seconds": round(time.perf_counter() - began),
                    "kid": probe(state)["kid"],
                    "precision": fit["precision"],
                    "recall": fit["recall"],
                    "coverage": fit["coverage"],
                    "spread": float(fakes.std(axis=0).mean() / images.std(axis=0).mean()),
                    "grade_kappa": grade_agreement(judge, fakes, asked),
                    "head_kappa": head_kappa(state, test_images, test_grades),
                    "tstr": score(train_grader(fakes, asked), test_images, test_grades)["kappa"],
                    "tstr_balanced": score(train_grader(balanced, even), test_images, test_grades)["kappa"],
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
                save_fixed_grid(state, args.out / f"{variant}-{state.step}.png", 50, args.seed)
            if state.step >= args.steps:
                break
        state.epoch += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="a prepared, graded store with a held-out split")
    parser.add_argument("--recipes", default="small-data+grade_head=true+balance_grades=true,graded")
    parser.add_argument("--steps", type=int, default=4500)
    parser.add_argument("--eval-at", default="1500,3000,4500", help="comma-separated steps")
    parser.add_argument("--generator-width", type=int, default=256, help="the demo's quarter width")
    parser.add_argument("--discriminator-width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-grades"), help="grids and results.json")
    args = parser.parse_args()
    args.eval_at = {int(step) for step in args.eval_at.split(",")}
    args.out.mkdir(parents=True, exist_ok=True)
    probe = QualityProbe.for_store(args.store, seed=args.seed)
    rows = [row for variant in args.recipes.split(",") for row in run(variant, args.store, probe, args)]
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    real = real_trained_grader(args.store, probe.evaluator)
    store = Store(args.store)
    _, test = heldout_halves(store)
    real_kappa = score(real, *store.load("heldout", test))["kappa"]
    print(f"\nstore {args.store}, G {args.generator_width} / D {args.discriminator_width}, batch {args.batch_size}")
    print(f"real-trained grader kappa on the real test half: {real_kappa:.3f}")
    print(
        f"{'variant':<50} {'step':>5} {'KID':>6} {'prec':>5} {'rec':>5} {'spread':>6} "
        f"{'grade k':>7} {'head k':>6} {'TSTR':>6} {'TSTR bal':>8}"
    )
    for r in rows:
        head = "-" if r["head_kappa"] is None else f"{r['head_kappa']:.2f}"
        print(
            f"{r['variant']:<50} {r['step']:>5} {r['kid']:>6.3f} {r['precision']:>5.2f} {r['recall']:>5.3f} "
            f"{r['spread']:>6.2f} {r['grade_kappa']:>7.2f} {head:>6} {r['tstr']:>6.2f} {r['tstr_balanced']:>8.2f}"
        )


if __name__ == "__main__":
    main()
