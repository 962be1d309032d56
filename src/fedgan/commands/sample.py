"""`fedgan sample`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import add_common, add_model_check, check_model, command


def add_parser(sub: Any) -> None:
    sample = command(
        sub,
        "sample",
        "write a synthetic dataset from a run's generator (EyePACS layout when conditional)",
        """
        The dataset a federation publishes: --count images from RUN's latest checkpoint as
        lossless PNGs in DIR/train/, with DIR/trainLabels.csv (image,level) when the generator is
        grade-conditional, so DR pipelines and `fedgan prepare` read it as EyePACS; plus
        DIR/provenance.toml (checkpoint, round, seed, versions). Audit a run (`fedgan audit`)
        before publishing what it makes.
        """,
        """
        fedgan sample runs/fed5 --count 5000 --out synthetic/fed5
        fedgan sample runs/fed5 --count 1000 --out synthetic/fed5-severe --grade-mix 0,0,1,1,1
        """,
    )
    sample.add_argument("run", type=Path, help="run folder (or checkpoint)")
    sample.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    sample.add_argument("--count", type=int, required=True, help="images to generate")
    sample.add_argument(
        "--grade-mix", help="relative frequency of grades 0-4 for a conditional generator (default: balanced)"
    )
    sample.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
    add_model_check(sample)
    add_common(sample)
    sample.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    check_model(args.run, args.model)
    from fedgan.data.sources.synth_sets import parse_grade_mix
    from fedgan.synthetic import write_synthetic_set

    summary = write_synthetic_set(
        args.run,
        args.out,
        count=args.count,
        grade_mix=parse_grade_mix(args.grade_mix) if args.grade_mix else None,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    grades = (
        f" ({', '.join(f'grade {g}: {n}' for g, n in summary.per_grade.items())}, EyePACS layout)"
        if summary.per_grade
        else ""
    )
    print(f"wrote {summary.images} synthetic images to {summary.out}{grades}")
