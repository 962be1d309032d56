"""Throughput of the data path, measured in one run on this machine.

1. Procedural generators: fundus photographs (EyePACS layout) and CT slices (DICOM), images/s.
2. `prepare` (reduced-scale JPEG decoding, OpenCV, worker processes, streamed shards) against a
   straightforward single-process PIL + numpy pipeline doing the same steps on the same files
   (full decode, grayscale, bilinear resize, the same CLAHE, gamma, binning, same TFRecord
   writer). Prints images/s for both and the ratio per core. Goal: >= 3x per core.

    python benchmarks/data_throughput.py [--count 100] [--copies 20] [--photo-size 1411]

1411 px is the size of the real fundus photograph the paper's timing used; EyePACS originals
are larger still, which favours reduced-scale decoding even more.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fedgan.config import PreprocessConfig, StoreConfig
from fedgan.data.prepare import discover, prepare_store
from fedgan.data.sources.synth_sets import write_ct_set, write_fundus_set
from fedgan.data.store import image_record
from fedgan.data.tfrecord import TFRecordWriter
from fedgan.parallel import default_workers


def naive_prepare(root: Path, out: Path, config: PreprocessConfig) -> int:
    """The pipeline as one would first write it: PIL full decode, numpy maths, one process."""
    equaliser = cv2.createCLAHE(clipLimit=config.clahe_clip, tileGridSize=(config.clahe_tiles, config.clahe_tiles))
    count = 0
    with TFRecordWriter(out, compression="gzip") as writer:
        for item in discover(root).items:
            with Image.open(item.path) as image:
                gray = image.convert("L").resize((config.size, config.size), Image.BILINEAR)
            values = equaliser.apply(np.asarray(gray)).astype(np.float32) / 255
            values = np.round(values**config.gamma * config.bins) / config.bins * 2 - 1
            writer.write(image_record(values[None], label=item.label, item_id=item.item_id, source=item.path.name))
            count += 1
    return count


def replicate(source: Path, target: Path, copies: int) -> int:
    """An EyePACS folder holding `copies` hard links of each photograph under new ids.

    Generating large photographs is slow; preparing them is not, so prepare is timed on enough
    files (thousands) that process start-up does not dominate.
    """
    (target / "train").mkdir(parents=True)
    rows = (source / "trainLabels.csv").read_text().splitlines()[1:]
    lines = ["image,level"]
    for copy in range(copies):
        for row in rows:
            image_id, level = row.split(",")
            new_id = f"{copy}x{image_id}"
            (target / "train" / f"{new_id}.jpeg").hardlink_to(source / "train" / f"{image_id}.jpeg")
            lines.append(f"{new_id},{level}")
    (target / "trainLabels.csv").write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="photographs to generate")
    parser.add_argument(
        "--copies", type=int, default=20, help="each photograph is prepared this many times (hard links)"
    )
    parser.add_argument("--photo-size", type=int, default=1411, help="photograph height in pixels")
    parser.add_argument("--ct-patients", type=int, default=4)
    args = parser.parse_args()
    workers = default_workers()
    config = PreprocessConfig()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        fundus = write_fundus_set(tmp_path / "raw", count=args.count, size=args.photo_size, progress=False)
        small = write_fundus_set(tmp_path / "raw512", count=args.count, size=512, progress=False)
        ct = write_ct_set(tmp_path / "ct", patients=args.ct_patients, slices=32, progress=False)
        print(f"machine: {workers} worker processes (one per core)")
        print(f"generator  fundus {args.photo_size} px: {fundus.images_per_second:7.1f} images/s")
        print(f"generator  fundus 512 px:  {small.images_per_second:7.1f} images/s")
        print(f"generator  CT 512 px DICOM: {ct.images_per_second:6.1f} slices/s")

        total = replicate(tmp_path / "raw", tmp_path / "many", args.copies)
        print(f"prepare    timed on {total} files ({args.count} photographs x {args.copies} hard links)")
        started = time.perf_counter()
        naive_count = naive_prepare(tmp_path / "many", tmp_path / "naive.tfrecord.gz", config)
        naive_rate = naive_count / (time.perf_counter() - started)
        ours = prepare_store(
            tmp_path / "many",
            tmp_path / "store",
            preprocess_config=config,
            store_config=StoreConfig(),
            workers=workers,
            progress=False,
        )
        one_core = prepare_store(
            tmp_path / "many",
            tmp_path / "store1",
            preprocess_config=config,
            store_config=StoreConfig(),
            workers=1,
            progress=False,
        )
    print(f"prepare    naive PIL+numpy, 1 process:   {naive_rate:7.1f} images/s")
    print(f"prepare    fedgan, 1 process:            {one_core.images_per_second:7.1f} images/s")
    print(f"prepare    fedgan, {workers} processes:            {ours.images_per_second:7.1f} images/s")
    print(
        f"ratio      fedgan / naive, per core:     {ours.images_per_second / workers / naive_rate:7.2f}x   (goal >= 3x)"
    )
    print(f"ratio      fedgan / naive, whole machine:{ours.images_per_second / naive_rate:7.2f}x")


if __name__ == "__main__":
    main()
