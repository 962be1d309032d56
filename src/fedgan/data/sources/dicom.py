"""DICOM series (e.g. RSNA Abdominal Trauma: `DIR/<patient>/<series>/<n>.dcm`) for pretraining.

Slices are unlabelled. Discovery only lists files; pixels are read in the workers by
`fedgan.data.decode`, which applies rescale slope/intercept, the configured Hounsfield window
and the MONOCHROME1 inversion.
"""

from __future__ import annotations

from pathlib import Path

from fedgan.data.sources.base import UNLABELLED, Discovery, SourceItem
from fedgan.errors import DataError


def slice_order(path: Path) -> tuple[str, int | str]:
    """Series folder, then the numeric file name (`2.dcm` before `10.dcm`)."""
    return (str(path.parent), int(path.stem) if path.stem.isdigit() else path.stem)


def read_dicom_tree(root: Path) -> Discovery:
    files = sorted((p for p in root.rglob("*.dcm") if p.is_file()), key=slice_order)
    if not files:
        raise DataError(root, "no .dcm files found")
    items = [SourceItem(str(p.relative_to(root).with_suffix("")), p, UNLABELLED) for p in files]
    return Discovery("dicom", items, [])
