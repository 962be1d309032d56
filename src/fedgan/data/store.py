"""A prepared store: sharded TFRecord files per split plus `manifest.json`.

```
STORE/
  manifest.json                 counts, per-grade counts, image shape, preprocessing config,
                                sha256 per shard, one entry per record (id, source file, split)
  train-00000-of-00002.tfrecord.gz  Example records: image (float32 CHW in [-1, 1]), label (int64,
  heldout-00000-of-00001.tfrecord.gz  -1 if unlabelled), channels/height/width, id, source
```
Training reads only the `train` split; the `heldout` split (stratified by grade) exists for
evaluation. The manifest is the single description of a store, so readers never guess; this
module both writes it (`write_manifest`) and reads it (`Store`), so its format lives in one place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fedgan import __version__
from fedgan.atomic import write_text_atomic
from fedgan.data.tfrecord import decode_example, encode_example, read_records
from fedgan.errors import DataError, FedGANError


def write_manifest(
    folder: Path,
    *,
    source: dict[str, Any],
    image_shape: tuple[int, int, int],
    compression: str,
    settings: dict[str, dict[str, Any]],
    entries: list[dict[str, Any]],
    shards: dict[str, list[dict[str, Any]]],
    skipped: list[dict[str, str]],
) -> dict[str, Any]:
    """Write `folder/manifest.json` for the records `entries` in `shards` (per split); returns it.
    `settings` holds the configs that made the store (`preprocess`, `store`)."""
    splits = {}
    for split in SPLITS:
        labels = [e["label"] for e in entries if e["split"] == split]
        splits[split] = {"count": len(labels), "per_grade": grade_counts(labels), "shards": shards[split]}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"fedgan {__version__}",
        "source": source,
        "count": len(entries),
        "per_grade": grade_counts([e["label"] for e in entries]),
        "image_shape": list(image_shape),
        "value_range": [-1.0, 1.0],
        "compression": compression,
        **settings,
        "splits": splits,
        "tf_data": tf_data_snippet(compression),
        "records": entries,
        "skipped": skipped,
    }
    write_text_atomic(Path(folder) / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


MANIFEST = "manifest.json"
FORMAT = "fedgan-store"
FORMAT_VERSION = 1
SPLITS = ("train", "heldout")


def tf_data_snippet(compression: str) -> str:
    """How a TensorFlow user reads a store (shown by `fedgan inspect` and in the manifest)."""
    kind = '"GZIP"' if compression == "gzip" else '""'
    return (
        f"tf.data.TFRecordDataset(files, compression_type={kind}).map(lambda r: tf.io.parse_single_example(r, "
        '{"image": tf.io.FixedLenFeature([C*H*W], tf.float32), "label": tf.io.FixedLenFeature([], tf.int64)}))'
    )


def image_record(image: np.ndarray, *, label: int, item_id: str, source: str) -> bytes:
    channels, height, width = image.shape
    return encode_example(
        {
            "image": image.ravel(),
            "label": [label],
            "channels": [channels],
            "height": [height],
            "width": [width],
            "id": item_id,
            "source": source,
        }
    )


@dataclasses.dataclass(frozen=True)
class Record:
    image: np.ndarray  # float32, (C, H, W), [-1, 1]
    label: int
    item_id: str


def shard_info(path: Path, count: int) -> dict[str, Any]:
    """A shard's manifest entry: file name, record count and sha256 of the file as written."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"file": path.name, "count": count, "sha256": digest}


def grade_counts(labels: list[int] | np.ndarray) -> dict[str, int]:
    """Per-grade counts with string keys (JSON), unlabelled as "unlabelled"."""
    counts = Counter(int(label) for label in labels)
    return {("unlabelled" if k < 0 else str(k)): v for k, v in sorted(counts.items())}


class Store:
    """Read access to a prepared store; everything it knows comes from the manifest."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise FedGANError(f"{self.path}: not a FedGAN store (no {MANIFEST}; create one with `fedgan prepare`)")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(manifest_path, f"corrupt manifest ({exc})") from None
        if self.manifest.get("format") != FORMAT or self.manifest.get("format_version") != FORMAT_VERSION:
            raise DataError(
                manifest_path,
                f"unsupported store format {self.manifest.get('format')!r} "
                f"version {self.manifest.get('format_version')!r} (this FedGAN reads {FORMAT} v{FORMAT_VERSION})",
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["image_shape"])  # type: ignore[return-value]

    @property
    def compression(self) -> str:
        return str(self.manifest["compression"])

    def entries(self, split: str = "train") -> list[dict[str, Any]]:
        """Manifest entries (id, source, label, shard) of a split, in record order."""
        self._check_split(split)
        return [entry for entry in self.manifest["records"] if entry["split"] == split]

    def labels(self, split: str = "train") -> np.ndarray:
        """Labels of a split from the manifest alone (partitioning needs no pixels)."""
        return np.asarray([entry["label"] for entry in self.entries(split)], np.int64)

    def records(self, split: str = "train") -> Iterator[Record]:
        """Stream a split's records from its shards, checksummed frame by frame."""
        self._check_split(split)
        for shard in self.manifest["splits"][split]["shards"]:
            for payload in read_records(self.path / shard["file"], compression=self.compression):
                yield self._decode(payload)

    def load(self, split: str = "train", indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A split, or the records at `indices` of it (a hospital's partition), as
        (images N x C x H x W float32, labels N int64), preallocated from the manifest.

        Shards that hold none of `indices` are not opened and only the wanted records are decoded,
        so a hospital of ten pays for about a tenth of the split, not all of it."""
        self._check_split(split)
        count = self.manifest["splits"][split]["count"]
        wanted = np.arange(count) if indices is None else np.sort(np.asarray(indices))
        images = np.empty((len(wanted), *self.image_shape), np.float32)
        labels = np.empty(len(wanted), np.int64)
        filled = 0
        for shard, (start, stop) in enumerate(self.shard_ranges(split)):
            inside = wanted[(wanted >= start) & (wanted < stop)]
            if len(inside):
                block = slice(filled, filled + len(inside))
                images[block], labels[block] = self.read_shard(split, shard, inside - start)
                filled += len(inside)
        return images, labels

    def shard_ranges(self, split: str = "train") -> list[tuple[int, int]]:
        """Each shard's record indices in the split, as [start, stop)."""
        counts = [shard["count"] for shard in self.manifest["splits"][split]["shards"]]
        stops = np.cumsum(counts).tolist()
        return [(stop - count, stop) for count, stop in zip(counts, stops, strict=True)]

    def read_shard(self, split: str, shard: int, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The records at sorted `offsets` within one shard; the others are read (gzip streams cannot
        seek) and checksummed but not decoded. A shard with more or fewer records than its manifest
        entry is named."""
        entry = self.manifest["splits"][split]["shards"][shard]
        path, expected = self.path / entry["file"], entry["count"]
        images = np.empty((len(offsets), *self.image_shape), np.float32)
        labels = np.empty(len(offsets), np.int64)
        slot = np.full(expected, -1)
        slot[offsets] = np.arange(len(offsets))
        found = 0
        for found, payload in enumerate(read_records(path, compression=self.compression), start=1):
            if found > expected:
                break
            if slot[found - 1] >= 0:
                record = self._decode(payload)
                images[slot[found - 1]], labels[slot[found - 1]] = record.image, record.label
        if found != expected:
            raise DataError(path, f"holds {'more' if found > expected else found} records, the manifest {expected}")
        return images, labels

    def _decode(self, payload: bytes) -> Record:
        features = decode_example(payload)
        image = np.asarray(features["image"], np.float32).reshape(self.image_shape)
        return Record(image, int(features["label"][0]), features["id"][0].decode())  # type: ignore[union-attr]

    def verify(self) -> list[str]:
        """Shard files whose sha256 differs from the manifest's (empty when intact)."""
        bad = []
        for split in SPLITS:
            for shard in self.manifest["splits"][split]["shards"]:
                with open(self.path / shard["file"], "rb") as handle:
                    if hashlib.file_digest(handle, "sha256").hexdigest() != shard["sha256"]:
                        bad.append(shard["file"])
        return bad

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise FedGANError(f"unknown split {split!r}; a store has {', '.join(SPLITS)}")
