"""`fedgan evaluate`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import add_common, add_model_check, check_model, command


def add_parser(sub: Any) -> None:
    evaluate = command(
        sub,
        "evaluate",
        "measure a run's generator against real images with the store's fixed evaluator",
        """
        Generates images from RUN's latest checkpoint and writes RUN/eval/metrics.json: Frechet
        distance, KID, precision/recall, density/coverage and the per-sample realism score in the
        two feature spaces of the store's fixed evaluator, built once from half of the held-out
        split, which no GAN reads (its sha256 is recorded): the structure space (layout,
        sharpness, orientation, vessels, tiling artefacts; the headline) and a grade classifier's
        features, with 95 % intervals and per grade; utility (a grader trained on the synthetic
        images, tested on real held-out ones, beside the same grader trained on real images); and
        with --reference the paper's realism score (mean sigmoid of that checkpoint's
        discriminator on the generated images).
        """,
        """
        fedgan evaluate runs/fed5 --real stores/fundus
        fedgan evaluate runs/fed5 --real stores/fundus --reference runs/central --count 2000
        """,
    )
    evaluate.add_argument("run", type=Path, help="run folder (or checkpoint) to evaluate")
    evaluate.add_argument(
        "--real", type=Path, required=True, help="prepared store of the real images (graded, with a held-out split)"
    )
    evaluate.add_argument(
        "--reference",
        type=Path,
        help="checkpoint whose discriminator gives the paper's realism score (the same for all runs compared)",
    )
    evaluate.add_argument(
        "--count", type=int, help="images to generate (default: as many as the store's training split)"
    )
    evaluate.add_argument(
        "--inception-weights",
        type=Path,
        metavar="PATH",
        help="TorchScript Inception-v3 (NVIDIA's inception-2015-12-05.pt) for the standard FID too; never downloaded",
    )
    add_model_check(evaluate)
    add_common(evaluate)
    evaluate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    check_model(args.run, args.model)
    from fedgan.evaluation.evaluate import evaluate_run
    from fedgan.evaluation.results import (
        FID,
        FIDELITY,
        FIDELITY_GRADER,
        SYNTHETIC_TRAINED,
        UTILITY,
        VALUE,
        headline,
        result_path,
    )

    result = evaluate_run(
        args.run,
        args.real,
        count=args.count,
        reference=args.reference,
        seed=args.seed,
        inception_weights=args.inception_weights,
    )
    fidelity, grader = result[FIDELITY], result[FIDELITY_GRADER]
    print(
        f"evaluated {args.run} ({result['counts']['generated']} generated vs {result['counts']['real']} real, "
        f"evaluator {result['evaluator_sha256'][:12]}):\n  {headline(result)}\n"
        "in the evaluator's structure space (headline) and grader space:"
    )
    for name, value in fidelity.items():
        other = grader[name]
        print(
            f"  {name:<14} {value['value']:.4g}  [{value['low']:.4g}, {value['high']:.4g}]"
            f"    grader {other['value']:.4g}  [{other['low']:.4g}, {other['high']:.4g}]"
        )
    synthetic = result[UTILITY][SYNTHETIC_TRAINED]
    if "kappa" not in synthetic:
        print(f"  utility: n/a ({synthetic['reason']})")
    if FID in result:
        print(f"  FID (Inception): {result[FID][VALUE]:.4g}")
    shown_with = f"; `fedgan report {args.run}` shows them with the run" if Path(args.run).is_dir() else ""
    print(f"metrics in {result_path(args.run)}{shown_with}")
