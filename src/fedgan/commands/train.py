"""`fedgan train`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import (
    TRAIN,
    add_common,
    add_model_options,
    command,
    model_configs,
    quality_probe,
    with_default,
)
from fedgan.errors import FedGANError


def add_parser(sub: Any) -> None:
    train = command(
        sub,
        "train",
        "train a GAN (or with --model ddpm a diffusion model) centrally on one store (also CT pretraining)",
        """
        Train the DCGAN (--model gan, the default) or a denoising diffusion model (--model
        ddpm: a small grade-conditional UNet, sampled by DDIM) on a store's training split in
        one place: the centralised baseline, and the pretraining phase on a CT store. Writes
        RUN/metrics.jsonl (per-step losses), RUN/samples/epoch-NNNN.png (fixed noise) and
        RUN/checkpoints/ (networks, optimisers, RNG states, configs), and resumes from the
        latest checkpoint with --resume.
        Resolution and channels come from the store. Settings: defaults, then --config FILE
        ([model] and [train] tables), then flags.
        """,
        """
        fedgan train --store stores/ct --out runs/ct-pretrain --epochs 5
        fedgan train --store stores/fundus --out runs/fundus --init runs/ct-pretrain/checkpoints/latest
        fedgan train --store stores/fundus --out runs/cond --conditional --batch-size 16 --device cuda
        fedgan train --resume runs/fundus --epochs 10
        fedgan train --store stores/fundus --out runs/ddpm --model ddpm --conditional --epochs 40
        """,
    )
    train.add_argument("--store", type=Path, help="prepared store to train on")
    train.add_argument("--out", type=Path, help="run folder to create")
    train.add_argument("--resume", type=Path, metavar="RUN", help="continue RUN from its latest checkpoint")
    train.add_argument(
        "--init", type=Path, metavar="CKPT", help="start from a pretrained checkpoint's weights (transfer learning)"
    )
    add_model_options(train, epochs_help=with_default("epochs in total", TRAIN.epochs))
    add_common(train)
    train.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from fedgan.config import train_from_record
    from fedgan.runfolder import RunFolder
    from fedgan.training.checkpoint import read_checkpoint
    from fedgan.training.device import resolve_device
    from fedgan.training.run import resume_centralised, train_centralised

    device = resolve_device(args.device)
    if args.resume:
        if args.store or args.out or args.init:
            raise FedGANError("--resume takes its store and settings from the run; drop --store/--out/--init")
        resumed = RunFolder(args.resume)
        probe = quality_probe(resumed.store(), train_from_record(read_checkpoint(resumed.latest)["train_config"]))
        state = resume_centralised(args.resume, epochs=args.epochs, device=device, progress=not args.quiet, probe=probe)
        run = args.resume
    else:
        if not args.store or not args.out:
            raise FedGANError("fedgan train needs --store and --out (or --resume RUN)")
        model, train = model_configs(args)
        state = train_centralised(
            args.store,
            args.out,
            model_config=model,
            train_config=train,
            conditional=args.conditional,
            init=args.init,
            device=device,
            progress=not args.quiet,
            probe=quality_probe(args.store, train),
        )
        run = args.out
    folder = RunFolder(run)
    print(
        f"trained to epoch {state.epoch} ({state.step} steps) on {device}; samples in {folder.samples}, "
        f"checkpoint {folder.latest}, losses in {folder.metrics}"
    )
