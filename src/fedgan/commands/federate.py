"""`fedgan federate`."""

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
from fedgan.config import FEDERATION, WEIGHTINGS
from fedgan.errors import FedGANError


def add_parser(sub: Any) -> None:
    federate = command(
        sub,
        "federate",
        "train the GAN across N simulated hospitals with Flower",
        """
        Flower's simulation engine runs N virtual hospitals on this machine; each trains the
        shared local loop on its own partition of the store's training split for --epochs local
        epochs per round, and the server averages generator and discriminator with FedAvg.
        --clients 1 is the centralised baseline through the same code path. Writes
        RUN/metrics.jsonl (per round and hospital: losses, examples, seconds, bytes),
        RUN/samples/round-NNNN.png and RUN/checkpoints/round-NNNN.pt; --resume RUN continues
        after the last completed round.
        """,
        """
        fedgan federate --store stores/fundus --clients 5 --partition label-split --rounds 2 --out runs/fed5
        fedgan federate --store stores/fundus --clients 10 --partition dirichlet --alpha 0.3 --rounds 5 --out runs/fed10
        fedgan federate --store stores/fundus --clients 3 --rounds 2 --out runs/fed3 --init runs/ct/checkpoints/latest
        fedgan federate --store stores/fundus --clients 10 --rounds 10 --model ddpm --conditional --out runs/ddpm10
        fedgan federate --store stores/fundus --clients 5 --rounds 2 --out runs/fed5-secure --secagg
        fedgan federate --resume runs/fed5 --rounds 4
        """,
    )
    federate.add_argument("--store", type=Path, help="prepared store whose training split the hospitals share out")
    federate.add_argument("--out", type=Path, help="run folder to create")
    federate.add_argument("--resume", type=Path, metavar="RUN", help="continue RUN after its last completed round")
    federate.add_argument(
        "--init", type=Path, metavar="CKPT", help="start from a pretrained checkpoint (e.g. CT pretraining)"
    )
    group = federate.add_argument_group("federation")
    group.add_argument("--clients", type=int, help="number of hospitals (1 = centralised baseline)")
    add_partition_options(group)
    group.add_argument("--rounds", type=int, help=with_default("federated rounds in total", FEDERATION.rounds))
    group.add_argument(
        "--fraction",
        type=float,
        default=FEDERATION.fraction,
        help=with_default("share of hospitals sampled per round", FEDERATION.fraction),
    )
    group.add_argument(
        "--weighting",
        default=FEDERATION.weighting,
        choices=WEIGHTINGS,
        help=with_default("FedAvg weights: by images or the paper's unweighted mean", FEDERATION.weighting),
    )
    group.add_argument(
        "--min-successful",
        type=int,
        default=FEDERATION.min_successful,
        help=with_default(
            "a round goes on without failed, late or rejected hospitals while at least this many succeed",
            FEDERATION.min_successful,
        ),
    )
    group.add_argument(
        "--round-timeout",
        type=float,
        default=FEDERATION.round_timeout,
        help=with_default(
            "seconds a round (or SecAgg+ stage) waits for replies; later ones are left out", FEDERATION.round_timeout
        ),
    )
    group.add_argument(
        "--disclose",
        default=",".join(FEDERATION.disclose),
        help=with_default(
            "what each hospital reveals beyond its image count, comma-separated: losses (mean losses, steps, "
            "seconds: the per-hospital curves), grades (images per grade); '' for nothing. mdgan always "
            "reveals grades",
            FEDERATION.disclose,
        ),
    )
    group.add_argument(
        "--client-cpus",
        type=float,
        default=FEDERATION.client_cpus,
        help=with_default("cores per simulated hospital; 0: all, hospitals take turns", FEDERATION.client_cpus),
    )
    add_algorithm_options(federate)
    group = federate.add_argument_group("client-level differential privacy (hides each hospital's whole update)")
    group.add_argument(
        "--client-dp-noise",
        type=float,
        help="noise multiplier of Flower's server-side clipping wrapper (needs --weighting unweighted)",
    )
    group.add_argument(
        "--client-dp-clip",
        type=float,
        default=FEDERATION.client_dp_clip,
        help=with_default("L2 bound of each hospital's update", FEDERATION.client_dp_clip),
    )
    group = federate.add_argument_group("secure aggregation")
    group.add_argument(
        "--secagg",
        action="store_true",
        help="aggregate with Flower's SecAgg+: the server only sees the sum of the hospitals' masked updates",
    )
    group.add_argument(
        "--secagg-clip",
        type=float,
        default=FEDERATION.secagg_clip,
        help=with_default(
            "updates are clipped to +-this before quantisation onto 2^22 levels; metrics.jsonl reports each "
            "hospital's clipped share",
            FEDERATION.secagg_clip,
        ),
    )
    add_model_options(federate, epochs_help=with_default("local epochs per round", FEDERATION.local_epochs))
    add_common(federate)
    federate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from fedgan.federation.settings import ClientDP, SecAggSettings
    from fedgan.federation.simulate import completed_rounds, federate, resume_federation
    from fedgan.runfolder import RunFolder

    if args.device not in ("auto", "cpu"):
        raise FedGANError(
            "federate places hospitals itself (GPU shares when CUDA is present); --device applies to train"
        )
    if args.resume:
        if args.store or args.out or args.init or args.clients:
            raise FedGANError("--resume takes its store and settings from the run; drop --store/--out/--init/--clients")
        run = resume_federation(args.resume, rounds=args.rounds)
    else:
        if not args.store or not args.out or args.clients is None:
            raise FedGANError("fedgan federate needs --store, --out and --clients (or --resume RUN)")
        if args.clients < 1:
            raise FedGANError(f"--clients must be at least 1 (1 is the centralised baseline), got {args.clients}")
        model, train = model_configs(args, epochs=FEDERATION.local_epochs)
        run = federate(
            args.store,
            args.out,
            clients=args.clients,
            partition_kind=args.partition,
            rounds=args.rounds or FEDERATION.rounds,
            model_config=model,
            train_config=train,
            conditional=args.conditional,
            init=args.init,
            alpha=args.alpha,
            fraction=args.fraction,
            weighting=args.weighting,
            min_successful=args.min_successful,
            client_cpus=args.client_cpus,
            secagg=SecAggSettings(clip=args.secagg_clip) if args.secagg else None,
            client_dp=ClientDP(args.client_dp_noise, args.client_dp_clip) if args.client_dp_noise is not None else None,
            algorithm=algorithm_config(args, args.algorithm),
            round_timeout=args.round_timeout,
            disclose=tuple(d for d in args.disclose.split(",") if d),
        )
    done, folder = completed_rounds(run), RunFolder(run)
    print(
        f"federated training completed {done} round{'s' if done != 1 else ''}; samples in {folder.samples}, "
        f"checkpoint {folder.latest}, per-round metrics in {folder.metrics}"
    )
