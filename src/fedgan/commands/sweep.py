"""`fedgan sweep`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import (
    add_algorithm_options,
    add_common,
    add_model_options,
    add_partition_options,
    algorithm_config,
    command,
    model_configs,
    with_default,
)
from fedgan.config import ALGORITHMS, FEDERATION, PAPER_SIZES, SWEEP_ROUNDS
from fedgan.errors import FedGANError


def add_parser(sub: Any) -> None:
    sweep = command(
        sub,
        "sweep",
        "the paper's comparison: a centralised baseline and each federation size, evaluated alike",
        """
        Trains a centralised baseline (rounds x local epochs epochs) and one federation per
        --clients value (rounds of local epochs) from the same seed and budget, evaluates each
        with the store's fixed evaluator (the paper's realism score with the baseline's
        discriminator as the one reference) and writes DIR/sweep.json and DIR/report.html with
        the table (realism vs hospitals beside FD, KID, precision, recall, coverage, TSTR kappa,
        each also as a fraction of the baseline). --conditional trains grade-conditional GANs,
        which the synthetic-trained grader (TSTR) needs. Rerun the same command to resume.
        """,
        """
        fedgan sweep --store stores/fundus --clients 3,5,7,10 --rounds 5 --out runs/sweep --conditional
        fedgan sweep --store stores/fundus --clients 3,10 --rounds 2 --out runs/sw-ct --init runs/ct/checkpoints/latest
        fedgan sweep --store stores/fundus --clients 3,10 --rounds 8 --epochs 3 --algorithms fedavg,mdgan --out runs/sw
        fedgan sweep --store stores/fundus --clients 10 --rounds 5 --model gan,ddpm --conditional --out runs/sw-models
        """,
    )
    sweep.add_argument("--store", type=Path, required=True, help="prepared fundus store")
    sweep.add_argument("--out", type=Path, required=True, help="sweep folder")
    sizes = ",".join(map(str, PAPER_SIZES))
    sweep.add_argument("--clients", default=sizes, help=with_default("federation sizes, comma-separated", sizes))
    add_partition_options(sweep, alpha=False)
    sweep.add_argument("--rounds", type=int, default=SWEEP_ROUNDS, help=with_default("federated rounds", SWEEP_ROUNDS))
    sweep.add_argument("--init", type=Path, metavar="CKPT", help="start every member from this pretrained checkpoint")
    sweep.add_argument(
        "--count", type=int, help="generated images per evaluation (default: as many as real training images)"
    )
    sweep.add_argument(
        "--algorithms",
        default=ALGORITHMS[0],
        help=with_default(
            f"federated algorithms to compare, comma-separated from {', '.join(ALGORITHMS)}", ALGORITHMS[0]
        ),
    )
    add_algorithm_options(sweep)
    add_model_options(
        sweep,
        several=True,
        epochs_help=with_default("local epochs per round; the baseline trains rounds x this", FEDERATION.local_epochs),
    )
    add_common(sweep)
    sweep.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from fedgan.sweep import SweepSettings, SweptModel, format_table, run_sweep

    try:
        clients = tuple(int(c) for c in args.clients.split(","))
    except ValueError:
        raise FedGANError(f"--clients must be comma-separated integers, got {args.clients!r}") from None
    models = tuple(
        SweptModel(*model_configs(args, kind=kind.strip(), epochs=FEDERATION.local_epochs))
        for kind in args.model.split(",")
    )
    settings = SweepSettings(
        args.store,
        args.out,
        clients,
        args.partition,
        args.rounds,
        models,
        args.conditional,
        args.init,
        args.count,
        tuple(algorithm_config(args, name.strip()) for name in args.algorithms.split(",")),
    )
    rows = run_sweep(settings)
    print(format_table(rows))
    print(f"comparison in {args.out / 'report.html'} and {args.out / 'sweep.json'}")
