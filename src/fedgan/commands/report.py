"""`fedgan report`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import command


def add_parser(sub: Any) -> None:
    report = command(
        sub,
        "report",
        "write RUN/report.html: losses, samples, metrics, timings in one file",
        """
        A self-contained HTML page (plots and grids inlined) from what the run folder holds:
        loss curves (per round and hospital for federations), sample grids over rounds, the
        metrics of `fedgan evaluate` with their intervals, timings, bytes communicated and the
        configuration with images per grade per hospital. Open it in any browser.
        """,
        """
        fedgan report runs/fed5
        """,
    )
    report.add_argument("run", type=Path, help="run folder")
    report.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from fedgan.reporting.report import build_report

    print(f"report written to {build_report(args.run)}")
