"""A trained DDPM's samples by DDIM steps and guidance scale: quality against sampling time.

One checkpoint, the same noise and grades for every setting; KID and FD on the store's fixed
evaluator (both feature spaces) over `--count` images, and the seconds that sampling took.

    python benchmarks/ddpm_sampling.py runs/bench-gan-ddpm/ddpm-centralised --store runs/demo/stores/fundus \
        --steps 10,25,50 --guidance 1,2
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from fedgan.evaluation.probe import QualityProbe
from fedgan.models.ddpm import Denoiser
from fedgan.training.trained import load_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a DDPM run folder or checkpoint")
    parser.add_argument("--store", type=Path, required=True, help="the store it trained on")
    parser.add_argument("--steps", default="10,25,50", help="DDIM steps, comma-separated")
    parser.add_argument("--guidance", default="1,2", help="guidance scales, comma-separated")
    parser.add_argument("--count", type=int, default=256, help="generated images per setting")
    args = parser.parse_args()
    trained = load_trained(args.run)
    if not isinstance(trained.sampler, Denoiser):
        parser.error(f"{args.run} holds a {trained.model_config.kind}, not a ddpm")
    probe = QualityProbe.for_store(args.store, count=args.count)
    trained_config = trained.sampler.config
    print(f"{args.run}: {args.count} images per setting, {torch.get_num_threads()} threads\n")
    print("| DDIM steps | guidance | KID | FD | KID (grader) | s / 1000 samples |")
    print("|---|---|---|---|---|---|")
    for steps in (int(s) for s in args.steps.split(",")):
        for guidance in (float(g) for g in args.guidance.split(",")):
            trained.sampler.config = dataclasses.replace(trained_config, sample_steps=steps, guidance=guidance)
            started = time.perf_counter()
            quality = probe(trained)  # sampling dominates; the embedding of `count` images takes about a second
            seconds = (time.perf_counter() - started) / args.count * 1000
            print(
                f"| {steps} | {guidance:g} | {quality['kid']:.3g} | {quality['fd']:.4g} | {quality['kid_grader']:.3g} "
                f"| {seconds:.0f} |"
            )


if __name__ == "__main__":
    main()
