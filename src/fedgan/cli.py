"""The `fedgan` command: the top-level parser and the dispatch to one module per command
(`fedgan.commands`), each holding its own parser and its `run`."""

from __future__ import annotations

import argparse
import logging
import sys

from fedgan import __version__
from fedgan.commands import (
    audit,
    certs,
    demo,
    evaluate,
    export,
    federate,
    inspect,
    partition,
    prepare,
    report,
    sample,
    sweep,
    synth,
    train,
)
from fedgan.commands.common import formatter
from fedgan.errors import FedGANError

#: in the order `fedgan --help` lists them: the order of the work
COMMANDS = (
    synth,
    prepare,
    inspect,
    partition,
    train,
    federate,
    evaluate,
    sample,
    audit,
    export,
    report,
    sweep,
    certs,
    demo,
)

MAIN_EPILOG = """\
typical flow:
  fedgan synth fundus --out data/eyepacs --count 2000     # or use your own EyePACS/APTOS/DICOM data
  fedgan prepare --input data/eyepacs --out stores/fundus
  fedgan inspect stores/fundus
  fedgan partition stores/fundus --clients 5 --partition label-split
  fedgan train --store stores/fundus --out runs/central --epochs 5
  fedgan federate --store stores/fundus --clients 5 --rounds 2 --out runs/fed5
  fedgan evaluate runs/fed5 --real stores/fundus && fedgan report runs/fed5
  fedgan audit runs/fed5 --members stores/fundus --non-members stores/fundus:heldout
  fedgan sample runs/fed5 --count 5000 --out synthetic/fed5   # the dataset to publish
  fedgan export runs/fed5 --out releases/fed5.pt              # the generator alone, to hand on
  fedgan sweep --store stores/fundus --clients 3,5,7,10 --out runs/sweep
  fedgan demo                                             # all of the above on embedded data

Run `fedgan COMMAND --help` for each command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedgan",
        description="Federated GANs for medical images: hospitals jointly train a generator of their images "
        "with Flower, without any image leaving its hospital, and publish a synthetic dataset.",
        epilog=MAIN_EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"fedgan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="fedgan: %(message)s")
    logging.getLogger("flwr").propagate = False  # Flower prints its own lines; through ours they would appear twice
    if getattr(args, "quiet", False):  # Flower logs every round at INFO and resets its level when it starts
        logging.getLogger("flwr").addFilter(lambda record: record.levelno >= logging.WARNING)
    try:
        return args.handler(args) or 0
    except FedGANError as exc:
        print(f"fedgan: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fedgan: interrupted; no partial output was kept", file=sys.stderr)
        return 130
