"""Where a training step's time goes, by operator, against the machine's matmul ceiling.

`train_throughput.py` says how fast the whole step is; this says why. One warm-up step, then
the profiled ones, of the paper's 128 px networks with the default recipe; prints the operators
by self time with their share of the step, and for the convolutions (which hold nearly all the
FLOPs) the GFLOP/s they reach against a square fp32 matmul measured in the same run.

    python benchmarks/step_profile.py [--resolution 128] [--batch-size 16] [--steps 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from fedgan.config import GANConfig, TrainConfig
from fedgan.training.loop import new_state, train_step


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    train = TrainConfig(batch_size=args.batch_size)
    state = new_state(GANConfig(resolution=args.resolution, num_classes=5), train, torch.device("cpu"))
    real = torch.rand(args.batch_size, 1, args.resolution, args.resolution) * 2 - 1
    grades = torch.randint(0, 5, (args.batch_size,))
    train_step(state, real, grades, train)  # warm-up: allocator, first-call dispatch
    with FlopCounterMode(display=False) as counter:
        train_step(state, real, grades, train)
    flops = counter.get_total_flops()
    ceiling = matmul_gflops()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for _ in range(args.steps):
            train_step(state, real, grades, train)
        seconds = (time.perf_counter() - started) / args.steps
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(
        f"{args.resolution} px, paper widths, batch {args.batch_size}, {torch.get_num_threads()} threads: "
        f"{seconds:.2f} s per step, {flops / 1e9:.1f} GFLOP per step, {flops / seconds / 1e9:.1f} GFLOP/s, "
        f"{100 * flops / seconds / 1e9 / ceiling:.0f} % of the fp32 matmul ceiling ({ceiling:.1f} GFLOP/s)"
    )
    print(f"{'operator (self time)':<42} {'share':>6} {'ms per step':>12}")
    for event in events[:14]:
        share = event.self_cpu_time_total / total
        print(f"{event.key[:42]:<42} {100 * share:>5.1f}% {event.self_cpu_time_total / 1e3 / args.steps:>12.1f}")
    convolution = sum(e.self_cpu_time_total for e in events if "conv" in e.key)
    print(
        f"convolutions (forward and backward): {100 * convolution / total:.0f} % of the time; at "
        f"{flops / (convolution / 1e6 / args.steps) / 1e9:.1f} GFLOP/s if they held every FLOP"
    )


if __name__ == "__main__":
    main()
