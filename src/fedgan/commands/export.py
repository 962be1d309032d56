"""`fedgan export`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import command, with_default

CHOICES = ("auto", "best", "latest")


def add_parser(sub: Any) -> None:
    export = command(
        sub,
        "export",
        "write a release: the one file that makes images, without the discriminator or optimisers",
        """
        A run's checkpoints resume training, so they hold both networks, the generator's
        moving average, both optimisers and RNG states. A release holds the generator that
        publishes images (the moving average) and its shape, with the source checkpoint's
        sha256 and the run record for provenance: what to hand to someone who will only sample.
        The discriminator is left out on purpose (a white-box membership attack uses it).
        `fedgan sample` and `fedgan evaluate` read a release like a run.
        """,
        """
        fedgan export runs/fed5 --out releases/fed5.pt
        fedgan export runs/fed5 --out releases/fed5-last.pt --checkpoint latest
        """,
    )
    export.add_argument("run", type=Path, help="run folder (or one of its checkpoint files)")
    export.add_argument("--out", type=Path, required=True, help="release file to write")
    export.add_argument(
        "--checkpoint",
        choices=CHOICES,
        default=CHOICES[0],
        help=with_default(
            "best: the lowest in-training KID; latest: the last round or epoch; auto: best when the run measured "
            "one, else latest",
            CHOICES[0],
        ),
    )
    export.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from fedgan.training.release import export_release

    done = export_release(args.run, args.out, which=args.checkpoint)
    print(
        f"wrote {done.path} ({done.megabytes:.1f} MB) from {done.source} ({done.checkpoint_megabytes:.1f} MB, "
        f"{done.progress}); `fedgan sample {done.path} --count N --out DIR` makes a dataset"
    )
