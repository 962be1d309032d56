"""What one mdgan hospital step costs by the number of images it judges, in one run.

Under `mdgan` every generator step sends each hospital the fakes of the grades it holds; the
hospital takes one discriminator step on them and returns their gradients (`Judge.judge`). Under
label skew over many hospitals each judges a handful of images a step, so what matters is the
cost that does not shrink with the batch. This times `Judge.judge` at each `--batches` size (the
demo's quarter-width discriminator at 64 px unless told otherwise) and prints milliseconds per
call and per image, and each call's time as a share of a call of `--reference` images.

The discriminator update judges real and fake images in one pass (`DiscriminatorSide.update`);
`--two-passes` also times the same calls with a pass each (what the update did before, and still
does for batch norm or DP-SGD), interleaved in blocks in the same process, the fastest block of
each counted, and prints the ratio.

    python benchmarks/judge_cost.py [--batches 1,2,4,8,16,32] [--reference 32] [--repeats 20] [--two-passes]
"""

from __future__ import annotations

import argparse
import time

import torch

from fedgan.config import NUM_GRADES, GANConfig, TrainConfig
from fedgan.models.dcgan import Discriminator
from fedgan.training.loop import DiscriminatorSide, new_state
from fedgan.training.split import Judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--reference", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--discriminator-width", type=int, default=32)
    parser.add_argument(
        "--blocks", type=int, default=3, help="timings of each size (and pass style); the fastest counts"
    )
    parser.add_argument("--two-passes", action="store_true", help="also time a pass each for real and fake images")
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

    def timed(count: int, two_passes: bool) -> float:
        """One timing, real and fake images in one pass or in a pass each (batch norm's way)."""
        Discriminator.batch_coupled = property(lambda self: two_passes)  # type: ignore[method-assign]
        try:
            return seconds(count)
        finally:
            Discriminator.batch_coupled = coupled  # type: ignore[method-assign]

    coupled = Discriminator.batch_coupled
    counts = sorted({*(int(b) for b in args.batches.split(",")), args.reference})
    styles = (False, True) if args.two_passes else (False,)
    took = {(count, style): float("inf") for count in counts for style in styles}
    for _ in range(args.blocks):
        for count in counts:
            for style in styles:
                took[count, style] = min(took[count, style], timed(count, style))  # blocks interleave the styles
    print(f"torch threads {torch.get_num_threads()}, D width {args.discriminator_width}, {args.resolution} px")
    for count in counts:
        one = took[count, False]
        line = (
            f"{count:4d} images: {one * 1000:6.1f} ms a step, {one * 1000 / count:6.2f} ms an image, "
            f"{one / took[args.reference, False]:.2f}x a step of {args.reference}"
        )
        if args.two_passes:
            two = took[count, True]
            line += f"; a pass each: {two * 1000:6.1f} ms, one pass / two {one / two:.2f}"
        print(line)


if __name__ == "__main__":
    main()
