"""What a hospital pays to load its own partition, against loading the whole training split.

`Store.load(split, indices)` skips shards that hold none of a hospital's records and decodes only
its own, so a hospital's start-up cost falls with its share of the data. Prints, measured in one
run on one store, the seconds for the whole split and for each hospital of a label-split
federation, and the ratio.

    python benchmarks/hospital_load.py --store runs/demo/stores/fundus --hospitals 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fedgan.config import PARTITIONS
from fedgan.data.partition import partition
from fedgan.data.store import Store


def seconds(action: object, repeats: int) -> float:
    """The fastest of `repeats` timings (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--hospitals", type=int, default=10)
    parser.add_argument("--partition", choices=PARTITIONS, default="label-split")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    store = Store(args.store)
    whole = seconds(lambda: store.load("train"), args.repeats)
    parts = partition(store.labels("train"), args.hospitals, args.partition, 0)
    each = [seconds(lambda p=p: store.load("train", p), args.repeats) for p in parts]
    shards = len(store.manifest["splits"]["train"]["shards"])
    print(f"store {args.store}: {len(store.labels('train'))} training images in {shards} shards")
    print(f"{'hospital':>8} {'images':>7} {'seconds':>8} {'whole / this':>13}")
    for hospital, (part, took) in enumerate(zip(parts, each, strict=True)):
        print(f"{hospital:>8} {len(part):>7} {took:>8.3f} {whole / took:>13.1f}")
    print(f"{'whole':>8} {len(store.labels('train')):>7} {whole:>8.3f} {1:>13.1f}")
    print(f"mean hospital: {np.mean(each):.3f} s, {whole / np.mean(each):.1f}x less than the whole split")


if __name__ == "__main__":
    main()
