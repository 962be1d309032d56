"""Peak memory of a training run against the store's size: held in memory vs streamed.

Writes stores of 1k, 10k and 40k images at 128 px once into a scratch folder (random binned
images, which compress like real preprocessed ones; a store's reader does not care what the
pixels show), then, for each store and each way of reading it, runs in a fresh process: build
the training data as `fedgan train` does, train the demo-width model for a few steps on it and
read the rest of the epoch, and report that process's peak RSS. Printed as one table from one
run. Goal: the streamed column flat in store size.

    python benchmarks/memory.py --scratch /tmp/fedgan-memory [--sizes 1000,10000,40000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fedgan.data.store import SPLITS, image_record, shard_info, write_manifest
from fedgan.data.tfrecord import TFRecordWriter

PROBE = """
import json, resource, sys, time, torch
from fedgan.config import GANConfig, TrainConfig
from fedgan.data.store import Store
from fedgan.training.loop import new_state, train_step
from fedgan.training.run import load_training_data, model_config_for
store = Store(sys.argv[1])
train = TrainConfig(batch_size=32, memory_mb=float(sys.argv[2]))
model = model_config_for(store, GANConfig(generator_width=256, discriminator_width=32), conditional=True)
started = time.perf_counter()
data = load_training_data(store, True, train.memory_mb)
state = new_state(model, train, torch.device("cpu"))
for step, (images, grades) in enumerate(data.batches(train.seed, 0, train.batch_size)):
    if step < 3:
        train_step(state, images, grades, train)
print(json.dumps({"kind": type(data).__name__, "seconds": time.perf_counter() - started,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_store(folder: Path, count: int, size: int, shard_size: int = 256) -> Path:
    """`count` random binned images (17 levels, as `bins=16` makes) with EyePACS-like grades."""
    if (folder / "manifest.json").exists():
        return folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    grades = rng.choice(5, size=count, p=[0.735, 0.07, 0.151, 0.024, 0.02])
    entries, shards = [], {split: [] for split in SPLITS}
    for first in range(0, count, shard_size):
        index = len(shards["train"])
        path = folder / f"train-{index:05d}.tfrecord.gz"
        with TFRecordWriter(path, compression="gzip") as writer:
            for item in range(first, min(first + shard_size, count)):
                image = (rng.integers(0, 17, size=(1, size, size)) / 8 - 1).astype(np.float32)
                writer.write(image_record(image, label=int(grades[item]), item_id=f"{item}", source=f"{item}.png"))
                entries.append({"id": f"{item}", "source": f"{item}.png", "label": int(grades[item]), "split": "train"})
        shards["train"].append(shard_info(path, min(shard_size, count - first)))
    write_manifest(
        folder,
        source={"layout": "generated", "path": "benchmarks/memory.py"},
        image_shape=(1, size, size),
        compression="gzip",
        settings={},
        entries=entries,
        shards=shards,
        skipped=[],
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--sizes", default="1000,10000,40000")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels")
    parser.add_argument("--budget-mb", type=float, default=256.0, help="--memory-mb of the streamed runs")
    args = parser.parse_args()
    rows = []
    for count in (int(c) for c in args.sizes.split(",")):
        started = time.perf_counter()
        store = write_store(args.scratch / f"store-{count}", count, args.size)
        written = time.perf_counter() - started
        for budget in (1e9, args.budget_mb):
            out = subprocess.run(
                [sys.executable, "-c", PROBE, str(store), str(budget)], capture_output=True, text=True, check=True
            )
            rows.append((count, written, json.loads(out.stdout.strip().splitlines()[-1])))
    print(f"{args.size} px, demo-width conditional model, 3 training steps then the rest of one epoch read")
    print(f"{'images':>7} {'float32 MB':>10} {'read as':>10} {'peak RSS MB':>12} {'seconds':>8}")
    for count, _, result in rows:
        print(
            f"{count:>7} {count * args.size**2 * 4 / 2**20:>10.0f} {result['kind']:>10} "
            f"{result['peak_mb']:>12.0f} {result['seconds']:>8.1f}"
        )


if __name__ == "__main__":
    main()
