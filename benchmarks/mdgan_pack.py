"""mdgan's steps per exchange (`--pack`): quality against generator steps, in this process.

The split step (`fedgan.training.split`) run without Flower, so that only the algorithm is
measured: the server's generator, one judge per label-split hospital, `pack` generator steps
whose fakes are made at the start of each exchange. KID (structure space) on the store's fixed
evaluator every `--eval-every` steps, for each (hospitals, pack) pair:

    python benchmarks/mdgan_pack.py --store runs/demo/stores/fundus --runs 1x1,1x2,1x3,1x4,3x2 --steps 212 \\
        --init runs/demo/runs/ct-pretrain/checkpoints/latest
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from fedgan.config import NUM_GRADES, GANConfig, TrainConfig
from fedgan.data.partition import partition
from fedgan.data.store import Store
from fedgan.evaluation.probe import QualityProbe
from fedgan.federation.split_server import judged_by
from fedgan.models.dcgan import Discriminator
from fedgan.training.augment import augment_generator
from fedgan.training.checkpoint import init_from_checkpoint
from fedgan.training.loop import DiscriminatorSide, new_state
from fedgan.training.run import model_config_for
from fedgan.training.split import Judge, combine, draw_fakes, generator_step, grade_weights


def run(
    store_path: Path, hospitals: int, pack: int, args: argparse.Namespace, probe: QualityProbe
) -> list[tuple[int, float, float]]:
    model = model_config_for(
        Store(store_path),
        GANConfig(generator_width=args.generator_width, discriminator_width=args.discriminator_width),
        conditional=True,
    )
    train = TrainConfig(batch_size=args.batch_size, seed=args.seed)
    state = new_state(model, train, torch.device("cpu"))
    if args.init:
        init_from_checkpoint(state, args.init, train)
    images, labels = (torch.from_numpy(a) for a in Store(store_path).load("train"))
    labels = labels.long()
    judges, counts = [], []
    for h, part in enumerate(partition(labels.numpy(), hospitals, "label-split", args.seed)):
        discriminator = Discriminator(model)
        discriminator.load_state_dict(state.discriminator.state_dict())
        optimiser = torch.optim.Adam(
            discriminator.parameters(), lr=train.lr_discriminator, betas=(train.beta1, train.beta2)
        )
        judges.append(
            Judge(
                DiscriminatorSide(discriminator, optimiser),
                images[part],
                labels[part],
                dataclasses.replace(train, seed=h),
                augment_generator(h),
                conditional=True,
            )
        )
        counts.append([int((labels[part] == g).sum()) for g in range(NUM_GRADES)])
    pooled = torch.tensor(np.sum(counts, axis=0), dtype=torch.float64)
    shares = grade_weights(dict(enumerate(counts)), NUM_GRADES)
    started, curve, done = time.perf_counter(), [], 0
    while done < args.steps:
        draws = [
            draw_fakes(state, args.batch_size, pooled, own_step=j == 0) for j in range(min(pack, args.steps - done))
        ]
        answers: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in draws]
        for h, judge in enumerate(judges):
            for j, draw in enumerate(draws):
                pick = judged_by(counts[h], draw.labels, args.batch_size)
                if len(pick):
                    answers[j].append(
                        (pick, shares[h][draw.labels[pick]], judge.judge(draw.fakes[pick], draw.labels[pick])[0])
                    )
        for draw, answer in zip(draws, answers, strict=True):
            generator_step(state, draw, combine(args.batch_size, answer, tuple(draw.fakes.shape[1:])))
        previous, done = done, done + len(draws)
        if done // args.eval_every > previous // args.eval_every or done >= args.steps:
            curve.append((done, time.perf_counter() - started, probe(state)["kid"]))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--runs", default="1x1,1x2,1x3,1x4", help="HOSPITALSxPACK, comma-separated")
    parser.add_argument("--steps", type=int, default=212)
    parser.add_argument("--eval-every", type=int, default=105)
    parser.add_argument("--init", type=Path)
    parser.add_argument("--generator-width", type=int, default=256)
    parser.add_argument("--discriminator-width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    probe = QualityProbe.for_store(args.store, seed=args.seed)
    print(
        f"store {args.store}, label-split, batch {args.batch_size}, {torch.get_num_threads()} threads; KID "
        "(structure) at steps"
    )
    for spec in args.runs.split(","):
        hospitals, pack = map(int, spec.split("x"))
        curve = run(args.store, hospitals, pack, args, probe)
        print(
            f"{hospitals:>3} hospitals, pack {pack}: " + "  ".join(f"{s}:{k:.3g} ({t:.0f} s)" for s, t, k in curve),
            flush=True,
        )


if __name__ == "__main__":
    main()
