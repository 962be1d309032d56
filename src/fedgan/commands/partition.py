"""`fedgan partition`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import add_partition_options, command


def add_parser(sub: Any) -> None:
    part = command(
        sub,
        "partition",
        "show how a store's training split is divided among hospitals",
        """
        Print images per grade per hospital for a partition: label-split (the paper's non-IID
        setting, hospitals hold only a few grades each), dirichlet (per-grade shares drawn from
        Dirichlet(alpha)) or iid. Federated training uses exactly this division.
        """,
        """
        fedgan partition stores/fundus --clients 5
        fedgan partition stores/fundus --clients 10 --partition dirichlet --alpha 0.3
        """,
    )
    part.add_argument("store", type=Path, help="store folder")
    part.add_argument("--clients", type=int, required=True, help="number of hospitals")
    add_partition_options(part)
    part.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    part.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from fedgan.data.partition import partition, partition_table
    from fedgan.data.store import Store

    labels = Store(args.store).labels("train")
    parts = partition(labels, args.clients, args.partition, args.seed, alpha=args.alpha)
    print(f"{args.partition} partition of the training split across {args.clients} hospitals (seed {args.seed}):")
    print(partition_table(labels, parts))
