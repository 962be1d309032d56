"""`fedgan synth`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import add_common, command


def add_parser(sub: Any) -> None:
    synth = command(
        sub,
        "synth",
        "write procedural stand-in data sets in real on-disk layouts",
        """
        Write procedural data in the layouts of real data sets, so the real readers can be used
        where no data can be downloaded: colour fundus photographs with graded diabetic
        retinopathy lesions (EyePACS layout), or abdominal CT slices as DICOM series (RSNA layout).
        """,
        """
        fedgan synth fundus --out data/eyepacs --count 2000
        fedgan synth fundus --out data/balanced --count 500 --grade-mix 1,1,1,1,1 --size 768
        fedgan synth ct --out data/rsna-ct --patients 20 --slices 48
        """,
    )
    kinds = synth.add_subparsers(dest="kind", metavar="KIND", required=True)
    fundus = command(
        kinds,
        "fundus",
        "fundus photographs in the EyePACS layout",
        """
        Procedural colour fundus photographs, written as DIR/train/<id>.jpeg plus
        DIR/trainLabels.csv (columns image,level), exactly like the Kaggle/EyePACS set.
        Grades 0-4 follow the DR scale: 0 none, 1 microaneurysms, 2 + haemorrhages and exudates,
        3 + haemorrhages in all quadrants, cotton-wool spots, venous beading, 4 + new vessels
        and pre-retinal haemorrhage.
        """,
        """
        fedgan synth fundus --out data/eyepacs --count 2000 --seed 1
        """,
    )
    fundus.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    fundus.add_argument("--count", type=int, required=True, help="number of photographs")
    fundus.add_argument("--size", type=int, default=512, help="photograph height in pixels (default: 512)")
    fundus.add_argument(
        "--grade-mix",
        default=None,
        help="five weights for grades 0-4 (default: EyePACS screening mix 0.735,0.07,0.151,0.024,0.02)",
    )
    fundus.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_common(fundus, workers=True)
    ct = command(
        kinds,
        "ct",
        "CT slices as DICOM series (RSNA layout)",
        """
        Procedural abdominal CT slices in Hounsfield units as real DICOM files,
        DIR/<patient>/<series>/<n>.dcm, for pretraining the generator.
        """,
        """
        fedgan synth ct --out data/rsna-ct --patients 20 --slices 48
        """,
    )
    ct.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    ct.add_argument("--patients", type=int, required=True, help="number of patients (one series each)")
    ct.add_argument("--slices", type=int, default=32, help="slices per series (default: 32)")
    ct.add_argument("--size", type=int, default=512, help="slice size in pixels (default: 512, like clinical CT)")
    ct.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_common(ct, workers=True)
    synth.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from fedgan.data.sources.synth_sets import parse_grade_mix, write_ct_set, write_fundus_set

    if args.kind == "fundus":
        extra = {"grade_mix": parse_grade_mix(args.grade_mix)} if args.grade_mix else {}
        summary = write_fundus_set(
            args.out,
            count=args.count,
            size=args.size,
            seed=args.seed,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.quiet,
            **extra,
        )
        grades = ", ".join(f"grade {g}: {n}" for g, n in summary.per_grade.items())
        print(
            f"wrote {summary.images} fundus photographs to {summary.out} ({grades}) "
            f"in {summary.seconds:.1f} s, {summary.images_per_second:.1f} images/s"
        )
    else:
        summary = write_ct_set(
            args.out,
            patients=args.patients,
            slices=args.slices,
            size=args.size,
            seed=args.seed,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
        print(
            f"wrote {summary.images} CT slices ({args.patients} series) to {summary.out} "
            f"in {summary.seconds:.1f} s, {summary.images_per_second:.1f} slices/s"
        )
