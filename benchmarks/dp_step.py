"""Speed of a DP-SGD training step vs a plain one, measured in one run.

Same model (the paper's widths with group norm, which DP needs), same batches of a 64 px store:
plain steps, then steps with Opacus's per-sample gradients, clipping and noise on the
discriminator. Prints images/s of each and the ratio.

    python benchmarks/dp_step.py [--images 256] [--batch-size 32] [--resolution 64] [--steps 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from fedgan.config import GANConfig, TrainConfig
from fedgan.training.loop import new_state, train_step
from fedgan.training.privacy import attach_privacy


def images_per_second(private: bool, args: argparse.Namespace) -> float:
    model = GANConfig(resolution=args.resolution, norm="group")
    config = TrainConfig(batch_size=args.batch_size, dp_noise=1.0 if private else 0.0)
    state = new_state(model, config, torch.device("cpu"))
    attach_privacy(state, config, args.images, args.steps)
    real = torch.rand(args.batch_size, 1, args.resolution, args.resolution) * 2 - 1
    train_step(state, real, None, config)  # warm-up: allocations, Opacus hook set-up
    started = time.perf_counter()
    for _ in range(args.steps):
        train_step(state, real, None, config)
    return args.steps * args.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="dataset size (only the sampling rate depends on it)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    plain, private = images_per_second(False, args), images_per_second(True, args)
    print(
        f"plain step: {plain:.1f} images/s; DP-SGD step: {private:.1f} images/s; DP costs {plain / private:.2f}x the "
        "time "
        f"({args.resolution} px, batch {args.batch_size}, paper widths with group norm)"
    )


if __name__ == "__main__":
    main()
