"""What one mdgan hospital step costs by the number of images it judges, in one run.

Under `mdgan` every generator step sends each hospital the fakes of the grades it holds; the
hospital takes one discriminator step on them and returns their gradients (`Judge.judge`). Under
label skew over many hospitals each judges a handful of images a step, so what matters is the
cost that does not shrink with the batch. This times `Judge.judge` at each `--batches` size (the
demo's quarter-width discriminator at 64 px unless told otherwise) and prints milliseconds per
call and per image, and each call's time as a share of a call of `--reference` images.

    python benchmarks/judge_cost.py [--batches 1,2,4,8,16,32] [--reference 32] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from fedgan.config import NUM_GRADES, GANConfig, TrainConfig
from fedgan.training.loop import DiscriminatorSide, new_state
from fedgan.training.split import Judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--reference", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--discriminator-width", type=int, default=32)
    args = parser.parse_args()
    model = GANConfig(
        resolution=args.resolution, generator_width=64, discriminator_width=args.discriminator_width, num_classes=5
    )
    train = TrainConfig(seed=0)
    state = new_state(model, train, torch.device("cpu"))
    images = torch.rand(256, 1, args.resolution, args.resolution) * 2 - 1
    grades = torch.arange(256) % NUM_GRADES
    judge = Judge(
        DiscriminatorSide(state.discriminator, state.opt_discriminator), images, grades, train, state.augment, True
    )

    def seconds(count: int) -> float:
        fakes, labels = images[:count].clone(), grades[:count].clone()
        for _ in range(3):  # warm-up: first calls allocate
            judge.judge(fakes, labels)
        started = time.perf_counter()
        for _ in range(args.repeats):
            judge.judge(fakes, labels)
        return (time.perf_counter() - started) / args.repeats

    counts = sorted({*(int(b) for b in args.batches.split(",")), args.reference})
    took = {count: seconds(count) for count in counts}
    print(f"torch threads {torch.get_num_threads()}, D width {args.discriminator_width}, {args.resolution} px")
    for count in counts:
        print(
            f"{count:4d} images: {took[count] * 1000:6.1f} ms a step, {took[count] * 1000 / count:6.2f} ms an image, "
            f"{took[count] / took[args.reference]:.2f}x a step of {args.reference}"
        )


if __name__ == "__main__":
    main()
