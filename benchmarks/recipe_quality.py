"""Training recipes at equal wall time: the paper's against the small-data default.

Each recipe trains the same model on the same store for the same training seconds (evaluation
pauses the clock), from the same seed, or once from each of `--seeds`. Every `--eval-every`
seconds the in-training probe measures KID on the store's fixed evaluator; at the end, FD, KID,
precision, recall and coverage are measured over 5 independently drawn generated sets (95 %
intervals), in both feature spaces (structure is the headline). For a conditional model, the
grade kappa says whether the images carry their grades, as a grader trained on the real training
split reads them ("GAN-test"), in the probe's curve and at the end. With `--tstr`, a grader is
trained on the generated images and tested on real ones (kappa), beside the real-trained grader.

    python benchmarks/recipe_quality.py --store runs/demo/stores/fundus --budget 240
    python benchmarks/recipe_quality.py --store STORE --recipes paper,small-data,small-data+upsample=resize

A recipe can carry overrides: `small-data+upsample=resize+r1_gamma=0.1`. Grids of each recipe's
final samples go to `--out`.

Why several seeds: at the demo's budget the same recipe's final structure KID ranges from 1.62 to
2.54 over seeds 0-3 (docs/recipe.md), more than most single changes move it. With `--seeds 0,1,2,3`
every recipe trains once per seed and a last table gives each recipe's mean, standard deviation
and range over the seeds, and the ratio of its mean KID to the first recipe's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from fedgan.config import GANConfig, TrainConfig, from_dict
from fedgan.data.store import Store
from fedgan.evaluation.evaluate import generated_set
from fedgan.evaluation.evaluator import SPACES, heldout_halves, real_baseline, real_trained_grader, score
from fedgan.evaluation.fidelity import fidelity, over_draws
from fedgan.evaluation.grader import train_grader
from fedgan.evaluation.probe import QualityProbe, grade_agreement
from fedgan.runfolder import GRADE_KAPPA
from fedgan.training.data import InMemory
from fedgan.training.grids import save_fixed_grid
from fedgan.training.loop import new_state, train_step
from fedgan.training.recipes import apply_recipe
from fedgan.training.run import model_config_for

MODEL_FIELDS = {f.name for f in dataclasses.fields(GANConfig)}


def configs(variant: str, model: GANConfig, train: TrainConfig) -> tuple[GANConfig, TrainConfig]:
    """`recipe+key=value+...` -> configs; values are parsed as JSON where they can be."""
    name, *overrides = variant.split("+")
    model, train = apply_recipe(name, model, train)
    pairs = dict(item.split("=", 1) for item in overrides)
    values = {}
    for key, raw in pairs.items():
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    model = from_dict(GANConfig, {k: v for k, v in values.items() if k.replace("-", "_") in MODEL_FIELDS}, base=model)
    train = from_dict(
        TrainConfig, {k: v for k, v in values.items() if k.replace("-", "_") not in MODEL_FIELDS}, base=train
    )
    return model, train


def store_configs(variant: str, store: Store, args: argparse.Namespace, seed: int) -> tuple[GANConfig, TrainConfig]:
    """A conditional model for `store` at the widths and batch of `args`, with `variant`'s settings."""
    base_model = model_config_for(
        store,
        GANConfig(generator_width=args.generator_width, discriminator_width=args.discriminator_width),
        conditional=True,
    )
    return configs(variant, base_model, TrainConfig(batch_size=args.batch_size, seed=seed))


def train_for(variant: str, seed: int, store_path: Path, probe: QualityProbe, args: argparse.Namespace) -> dict:
    store = Store(store_path)
    model, train = store_configs(variant, store, args, seed)
    data = InMemory(*(torch.from_numpy(a) for a in store.load("train")))
    state = new_state(model, train, torch.device("cpu"))
    trained, next_eval, curve = 0.0, args.eval_every, []
    while trained < args.budget:
        for real, grades in data.batches(train.seed, state.epoch, train.batch_size, train.balance_grades):
            began = time.perf_counter()
            train_step(state, real, grades, train)
            trained += time.perf_counter() - began
            if trained >= next_eval or trained >= args.budget:
                curve.append({"seconds": round(trained, 1), "step": state.step, **probe(state)})
                next_eval += args.eval_every
            if trained >= args.budget:
                break
        state.epoch += 1
    save_fixed_grid(state, args.out / f"{variant}-seed{seed}.png", 50, seed)
    real_images, _ = store.load("train")
    fakes = [generated_set(state, len(real_images), probe.grade_frequencies, seed + draw) for draw in range(args.draws)]
    result = {
        "variant": variant if len(args.seeds) == 1 else f"{variant}@{seed}",
        "recipe": variant,
        "seed": seed,
        "steps": state.step,
        "seconds": trained,
        "curve": curve,
        "pixel_spread": float(fakes[0][0].std(axis=0).mean()),
        "real_pixel_spread": float(real_images.std(axis=0).mean()),
    }
    for space in SPACES:
        result[space] = over_draws(
            fidelity, probe.real[space], [probe.evaluator.embed(images, space) for images, _ in fakes]
        )
    if fakes[0][1] is not None:  # GAN-test: do the images carry their grades, to a real-trained grader?
        result["grade_kappa"] = grade_agreement(real_trained_grader(store_path, probe.evaluator), *fakes[0])
    if args.tstr:
        _, test = heldout_halves(store)
        test_images, test_labels = store.load("heldout", test)
        result["tstr"] = score(train_grader(fakes[0][0], fakes[0][1]), test_images, test_labels)
    return result


def seed_list(text: str) -> list[int]:
    """`"0,1,2"` -> [0, 1, 2]; argparse names this function in its error for anything else."""
    return [int(seed) for seed in text.split(",")]


def interval(metric: dict) -> str:
    return f"{metric['value']:.3g} [{metric['low']:.3g}, {metric['high']:.3g}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--store", type=Path, required=True, help="a prepared, graded store (e.g. runs/demo/stores/fundus)"
    )
    parser.add_argument(
        "--recipes", default="paper,small-data", help="comma-separated recipes, each with optional +key=value"
    )
    parser.add_argument("--budget", type=float, default=240, help="training seconds per recipe")
    parser.add_argument("--eval-every", type=float, default=30, help="training seconds between probes")
    parser.add_argument("--generator-width", type=int, default=256, help="the demo's quarter width")
    parser.add_argument("--discriminator-width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--draws", type=int, default=5, help="generated sets for the intervals")
    parser.add_argument(
        "--tstr", action="store_true", help="also train a grader on generated images (kappa on real test images)"
    )
    parser.add_argument("--seeds", type=seed_list, default=[0], help="comma-separated seeds (default: 0)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-recipes"), help="sample grids and results.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    probe = QualityProbe.for_store(args.store, seed=args.seeds[0])
    results = [
        train_for(variant, seed, args.store, probe, args) for variant in args.recipes.split(",") for seed in args.seeds
    ]
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(
        f"store {args.store}, {args.budget:.0f} s of training per recipe, G width {args.generator_width}, "
        f"D width {args.discriminator_width}, batch {args.batch_size}, {torch.get_num_threads()} threads"
    )
    if args.tstr:
        print(f"real-trained grader kappa: {real_baseline(args.store, probe.evaluator)['real_trained']['kappa']:.3f}")
    for space in SPACES:
        print(f"\n{space} space{' (headline)' if space == SPACES[0] else ''}")
        print(f"{'recipe':<40} {'steps':>6} {'FD':>24} {'KID':>28} {'precision':>20} {'recall':>20} {'coverage':>20}")
        for r in results:
            m = r[space]
            print(
                f"{r['variant']:<40} {r['steps']:>6} {interval(m['fd']):>24} {interval(m['kid']):>28} "
                f"{interval(m['precision']):>20} "
                f"{interval(m['recall']):>20} {interval(m['coverage']):>20}"
            )
    baseline = results[0]
    if len(args.seeds) == 1:  # with several, `across_seeds` compares means
        print(
            f"\nKID ratio to {baseline['variant']} (structure space): "
            + ", ".join(
                f"{r['variant']} {r['structure']['kid']['value'] / baseline['structure']['kid']['value']:.3f}"
                for r in results[1:]
            )
        )
    print(
        "pixel spread across samples (real "
        f"{baseline['real_pixel_spread']:.3f}): "
        + ", ".join(f"{r['variant']} {r['pixel_spread']:.3f}" for r in results)
    )
    if "grade_kappa" in baseline:
        print(
            "grade kappa (a real-trained grader on the generated images, against their grades): "
            + ", ".join(f"{r['variant']} {r['grade_kappa']:.3f}" for r in results)
        )
    if args.tstr:
        print("TSTR kappa: " + ", ".join(f"{r['variant']} {r['tstr']['kappa']:.3f}" for r in results))
    print("\nKID (structure) against training seconds, with the grade kappa of conditional generators:")
    for r in results:
        print(
            f"  {r['variant']:<40} "
            + "  ".join(
                f"{p['seconds']:.0f}s:{p['kid']:.3f}" + (f" ({p[GRADE_KAPPA]:.2f})" if GRADE_KAPPA in p else "")
                for p in r["curve"]
            )
        )
    if len(args.seeds) > 1:
        across_seeds(results, args.recipes.split(","))


def across_seeds(results: list[dict], recipes: list[str]) -> None:
    """Each recipe's structure-space figures over its seeds: mean, standard deviation, range."""
    print(f"\nacross seeds (structure space): mean, sd [min, max]; KID ratio of means to {recipes[0]}")
    first = None
    for recipe in recipes:
        runs = [r for r in results if r["recipe"] == recipe]
        figures = {k: np.array([r["structure"][k]["value"] for r in runs]) for k in ("kid", "precision", "coverage")}
        first = figures["kid"].mean() if first is None else first
        print(
            f"  {recipe:<40} "
            + "  ".join(
                f"{k} {v.mean():.3g} sd {v.std(ddof=1):.2g} [{v.min():.3g}, {v.max():.3g}]" for k, v in figures.items()
            )
            + f"  ratio {figures['kid'].mean() / first:.3f}"
        )


if __name__ == "__main__":
    main()
