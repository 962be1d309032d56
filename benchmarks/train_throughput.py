"""Training-step speed against a plain-PyTorch reference and the machine's matmul ceiling.

In one run on one machine, for each resolution (64 and 128 px, the paper's networks):
- our `fedgan.training.loop.train_step` (D step on real and fake, G step) in images/s,
- the FLOPs of one step counted by `torch.utils.flop_counter`, hence achieved GFLOP/s,
- a plain reference step of the same networks (pytorch/examples/dcgan style, nothing else),
- the fp32 matmul ceiling (square `torch.mm`), to say how close to the hardware the step runs.

    python benchmarks/train_throughput.py                      # CPU, batch 64
    python benchmarks/train_throughput.py --device cuda --batch-size 256 --resolutions 128
    python benchmarks/train_throughput.py --resolutions 64 --batch-size 16 --widths 256,32 --layouts  # the demo model

On CUDA our step runs under bfloat16 autocast (the product default there); the reference runs in
fp32 and under the same autocast, both printed. Goals: CPU >= 75 % of the matmul ceiling, and our
step never slower than the reference. `--layouts` also times our step with the networks in the
plain NCHW layout instead of channels-last (`fedgan.models.dcgan.CHANNELS_LAST`), interleaved.
`--compiled` times it with both networks' forward passes through `torch.compile` (inductor), which
could fuse the step's element-wise quarter (spectral norm, augmentation, loss; docs/recipe.md);
its first step, which compiles, is printed apart.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fedgan.config import GANConfig, TrainConfig
from fedgan.training.device import autocast, resolve_device
from fedgan.training.loop import GANState, new_state, train_step


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_ceiling(
    device: torch.device, size: int = 4096, repeats: int = 10, dtype: torch.dtype = torch.float32
) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    synchronise(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronise(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def reference_step(state: GANState, real: torch.Tensor, use_autocast: bool) -> None:
    """The textbook DCGAN update on the same networks and optimisers."""
    g, d, device = state.generator, state.discriminator, state.device
    z = torch.randn(real.shape[0], state.model_config.latent_dim, device=device)
    with autocast(device) if use_autocast else torch.autocast(device.type, enabled=False):
        fake = g(z)
        out_real, out_fake = d(real), d(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(
            out_real.float(), torch.full_like(out_real.float(), 0.9)
        ) + F.binary_cross_entropy_with_logits(out_fake.float(), torch.zeros_like(out_fake.float()))
    state.opt_discriminator.zero_grad()
    loss_d.backward()
    state.opt_discriminator.step()
    with autocast(device) if use_autocast else torch.autocast(device.type, enabled=False):
        out = d(fake)
        loss_g = F.binary_cross_entropy_with_logits(out.float(), torch.ones_like(out.float()))
    state.opt_generator.zero_grad()
    loss_g.backward()
    state.opt_generator.step()


def timed(step, device: torch.device, repeats: int) -> float:  # noqa: ANN001 - a zero-argument callable
    step()  # warm-up: allocator, kernel selection
    synchronise(device)
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronise(device)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolutions", default="64,128")
    parser.add_argument("--widths", default="", help="generator,discriminator widths (default: the paper's)")
    parser.add_argument("--layouts", action="store_true", help="also time our step with NCHW networks")
    parser.add_argument("--compiled", action="store_true", help="also time our step with torch.compile'd networks")
    parser.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="timed steps per round, 2 rounds (default: 5 on CPU at 64 px, 2 at 128 px, 20 on GPU)",
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    ceiling = matmul_ceiling(device)
    hardware = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({hardware}), torch {torch.__version__}, batch {args.batch_size}")
    print(f"fp32 matmul ceiling: {ceiling:8.1f} GFLOP/s")
    if device.type == "cuda":
        print(f"bf16 matmul ceiling: {matmul_ceiling(device, dtype=torch.bfloat16):8.1f} GFLOP/s")
    config = TrainConfig(batch_size=args.batch_size)
    widths = (
        dict(zip(("generator_width", "discriminator_width"), map(int, args.widths.split(",")), strict=True))
        if args.widths
        else {}
    )
    for resolution in (int(r) for r in args.resolutions.split(",")):
        state = new_state(GANConfig(resolution=resolution, **widths), config, device)
        real = torch.rand(args.batch_size, 1, resolution, resolution, device=device) * 2 - 1
        repeats = args.repeats or (20 if device.type == "cuda" else 5 if resolution <= 64 else 2)
        with FlopCounterMode(display=False) as counter:
            train_step(state, real, None, config)
        flops = counter.get_total_flops()
        nchw = new_state(GANConfig(resolution=resolution, **widths), config, device) if args.layouts else None
        if nchw is not None:
            for network in (nchw.generator, nchw.discriminator, nchw.generator_ema):  # the average too: its
                if network is not None:  # update copies G's weights, which is cheapest in the same layout
                    network.to(memory_format=torch.contiguous_format)
        compiled = new_state(GANConfig(resolution=resolution, **widths), config, device) if args.compiled else None
        if compiled is not None:
            compiled.generator.forward = torch.compile(compiled.generator.forward)
            compiled.discriminator.features = torch.compile(compiled.discriminator.features)
            started = time.perf_counter()
            train_step(compiled, real, None, config)
            compile_seconds = time.perf_counter() - started
        # Interleaved rounds, best of each: all see the same machine state (CPU clocks drift).
        ours, plain, contiguous, fused = float("inf"), float("inf"), float("inf"), float("inf")
        for _ in range(2 if nchw is None and compiled is None else 6):
            ours = min(
                ours, timed(lambda state=state, real=real: train_step(state, real, None, config), device, repeats)
            )
            plain = min(
                plain,
                timed(lambda state=state, real=real: reference_step(state, real, use_autocast=False), device, repeats),
            )
            if nchw is not None:
                contiguous = min(
                    contiguous,
                    timed(lambda nchw=nchw, real=real: train_step(nchw, real, None, config), device, repeats),
                )
            if compiled is not None:
                fused = min(
                    fused,
                    timed(lambda fast=compiled, real=real: train_step(fast, real, None, config), device, repeats),
                )
        print(f"{resolution:>4} px  step {flops / 1e9:8.1f} GFLOP")
        print(
            f"      fedgan step:         {args.batch_size / ours:8.1f} images/s  {flops / ours / 1e9:8.1f} GFLOP/s  "
            f"{100 * flops / ours / 1e9 / ceiling:5.1f} % of fp32 ceiling"
        )
        print(
            f"      plain PyTorch fp32:  {args.batch_size / plain:8.1f} images/s  {flops / plain / 1e9:8.1f} GFLOP/s  "
            f"ratio fedgan/plain {plain / ours:5.2f}x"
        )
        if nchw is not None:
            print(
                f"      fedgan step, NCHW:   {args.batch_size / contiguous:8.1f} images/s  "
                f"time channels-last/NCHW {ours / contiguous:5.2f}"
            )
        if compiled is not None:
            print(
                f"      fedgan step, compiled: {args.batch_size / fused:6.1f} images/s  "
                f"time compiled/eager {fused / ours:5.2f}  (first step, compiling: {compile_seconds:.1f} s)"
            )
        if device.type == "cuda":
            plain_amp = timed(
                lambda state=state, real=real: reference_step(state, real, use_autocast=True), device, repeats
            )
            print(
                f"      plain PyTorch bf16:  {args.batch_size / plain_amp:8.1f} images/s  ratio fedgan/plain-bf16 "
                f"{plain_amp / ours:5.2f}x"
            )


if __name__ == "__main__":
    main()
