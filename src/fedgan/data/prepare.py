"""`fedgan prepare`: read a layout, preprocess every image in worker processes, write a store.

Discovery (file names and CSV grades) happens up front and is cheap; pixels are decoded and
preprocessed in parallel and streamed straight into shards, so memory does not grow with the
data set. Bad inputs are skipped with a one-line report each (or stop the run with `strict`),
and the whole store is staged and renamed at the end: an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

from fedgan.atomic import check_destination, staged_directory
from fedgan.config import LAYOUTS, PreprocessConfig, StoreConfig, to_dict
from fedgan.data.decode import load_pixels
from fedgan.data.partition import stratified_holdout
from fedgan.data.preprocess import preprocess
from fedgan.data.sources.base import Discovery, Skip, SourceItem
from fedgan.data.sources.dicom import read_dicom_tree
from fedgan.data.sources.folder import read_image_folder
from fedgan.data.sources.tabular import APTOS, EYEPACS, read_csv_layout
from fedgan.data.store import SPLITS, image_record, shard_info, write_manifest
from fedgan.data.tfrecord import TFRecordWriter
from fedgan.errors import DataError, FedGANError
from fedgan.parallel import default_workers, ordered_map

log = logging.getLogger(__name__)


def detect_layout(root: Path) -> str:
    """Guess the layout from the marker files the real data sets ship with."""
    if (root / EYEPACS.labels_file).is_file():
        return "eyepacs"
    if (root / APTOS.labels_file).is_file():
        return "aptos"
    if next(root.rglob("*.dcm"), None) is not None:
        return "dicom"
    return "folder"


def discover(root: Path, layout: str = "auto", labels_csv: Path | None = None) -> Discovery:
    if not root.is_dir():
        raise FedGANError(f"{root}: input folder not found")
    if layout not in LAYOUTS:
        raise FedGANError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    chosen = detect_layout(root) if layout == "auto" else layout
    if chosen == "eyepacs":
        return read_csv_layout(root, EYEPACS, labels_csv)
    if chosen == "aptos":
        return read_csv_layout(root, APTOS, labels_csv)
    if labels_csv is not None:
        raise FedGANError(f"--labels applies to the eyepacs and aptos layouts, not {chosen}")
    return read_dicom_tree(root) if chosen == "dicom" else read_image_folder(root)


@dataclasses.dataclass(frozen=True)
class PrepareSummary:
    out: Path
    layout: str
    written: dict[str, int]  # per split
    skipped: list[Skip]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return (sum(self.written.values()) + len(self.skipped)) / max(self.seconds, 1e-9)

    def skip_reasons(self) -> dict[str, int]:
        """How many inputs were skipped for each kind of problem, most frequent first."""
        return dict(Counter(skip.kind for skip in self.skipped).most_common())


def relative_source(path: Path, root: Path) -> str:
    """Source files are recorded relative to the input folder, which the manifest names once."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """One shard's worth of consecutive items of a split: a unit of parallel work.

    Workers write whole shards, so no image data flows back through the parent process and
    the shard contents depend only on the inputs and the seed, never on the worker count.
    """

    path: Path
    split: str
    items: tuple[SourceItem, ...]
    root: Path
    config: PreprocessConfig
    compression: str


@dataclasses.dataclass(frozen=True)
class ShardResult:
    shard: dict | None  # {"file", "count", "sha256"}, None when every item was skipped
    entries: list[dict]
    skipped: list[Skip]
    attempted: int


def write_shard(job: ShardJob) -> ShardResult:
    """Worker: decode, preprocess and write one shard; unreadable items become skips."""
    entries, skipped = [], []
    with TFRecordWriter(job.path, compression=job.compression) as writer:
        for item in job.items:
            try:
                image = preprocess(load_pixels(item.path, job.config), job.config)
            except DataError as exc:
                skipped.append(Skip(str(item.path), exc.problem, exc.kind))
                continue
            source = relative_source(item.path, job.root)
            writer.write(image_record(image, label=item.label, item_id=item.item_id, source=source))
            entries.append(
                {"id": item.item_id, "source": source, "label": item.label, "split": job.split, "shard": job.path.name}
            )
    if not entries:
        job.path.unlink()
        return ShardResult(None, [], skipped, len(job.items))
    return ShardResult(shard_info(job.path, len(entries)), entries, skipped, len(job.items))


def shard_jobs(
    items: list[SourceItem],
    heldout: np.ndarray,
    staging: Path,
    root: Path,
    preprocess_config: PreprocessConfig,
    store_config: StoreConfig,
) -> list[ShardJob]:
    """Split items into train/held-out and each split into shards named like TensorFlow's."""
    jobs = []
    suffix = ".tfrecord.gz" if store_config.compression == "gzip" else ".tfrecord"
    for split in SPLITS:
        members = [item for item, is_heldout in zip(items, heldout, strict=True) if is_heldout == (split == "heldout")]
        size = store_config.shard_size
        chunks = [tuple(members[i : i + size]) for i in range(0, len(members), size)]
        for index, chunk in enumerate(chunks):
            path = staging / f"{split}-{index:05d}-of-{len(chunks):05d}{suffix}"
            jobs.append(ShardJob(path, split, chunk, root, preprocess_config, store_config.compression))
    return jobs


def prepare_store(
    root: Path,
    out: Path,
    *,
    layout: str = "auto",
    labels_csv: Path | None = None,
    preprocess_config: PreprocessConfig = PreprocessConfig(),
    store_config: StoreConfig = StoreConfig(),
    strict: bool = False,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareSummary:
    started = time.perf_counter()
    root, out = Path(root), Path(out)
    check_destination(out, [root], overwrite)  # before any work: nothing of the user's is touched
    discovery = discover(root, layout, labels_csv)
    skipped = list(discovery.skipped)
    if strict and skipped:
        raise FedGANError(f"{skipped[0]} (--strict: {len(skipped)} input problem(s) found before decoding)")
    for skip in skipped:
        log.warning("skipped %s", skip)
    items = discovery.items
    if not items:
        raise FedGANError(f"{root}: no usable images found for the {discovery.layout} layout")
    heldout = stratified_holdout([item.label for item in items], store_config.heldout_fraction, store_config.seed)
    entries: list[dict] = []
    shards: dict[str, list[dict]] = {split: [] for split in SPLITS}
    channels = 1 if preprocess_config.grayscale else 3
    with staged_directory(out, overwrite=overwrite, inputs=[root]) as staging:
        jobs = shard_jobs(items, heldout, staging, root, preprocess_config, store_config)
        results = ordered_map(
            write_shard,
            jobs,
            total=len(items),
            workers=workers or default_workers(),
            description="prepare",
            progress=progress,
            chunksize=1,
            advance=lambda result: result.attempted,
        )
        for job, result in zip(jobs, results, strict=True):
            for skip in result.skipped:
                if strict:
                    raise FedGANError(f"{skip} (--strict)")
                log.warning("skipped %s", skip)
            skipped += result.skipped
            entries += result.entries
            if result.shard is not None:
                shards[job.split].append(result.shard)
        if not entries:
            raise FedGANError(f"{root}: none of the {len(items)} images could be read (first problem: {skipped[-1]})")
        manifest = write_manifest(
            staging,
            source={
                "input": str(root.resolve()),
                "layout": discovery.layout,
                "labels_csv": str(labels_csv) if labels_csv else None,
            },
            image_shape=(channels, preprocess_config.size, preprocess_config.size),
            compression=store_config.compression,
            settings={"preprocess": to_dict(preprocess_config), "store": to_dict(store_config)},
            entries=entries,
            shards=shards,
            skipped=[{"where": s.where, "problem": s.problem, "kind": s.kind} for s in skipped],
        )
    written = {split: manifest["splits"][split]["count"] for split in SPLITS}
    return PrepareSummary(out, discovery.layout, written, skipped, time.perf_counter() - started)
