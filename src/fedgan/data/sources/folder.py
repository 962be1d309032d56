"""A plain folder of images: unlabelled, or graded by sub-folder names `0`-`4` (`DIR/2/x.png`)."""

from __future__ import annotations

from pathlib import Path

from fedgan.config import NUM_GRADES
from fedgan.data.sources.base import IMAGE_SUFFIXES, UNLABELLED, Discovery, Skip, SourceItem
from fedgan.errors import DataError


def read_image_folder(root: Path) -> Discovery:
    """All images under `root`, recursively; ids are paths relative to `root` without suffix.

    If every sub-folder holding images is named 0-4 (and no image lies at the top), the folder
    name is the grade; otherwise the set is unlabelled.
    """
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(root, f"no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    parents = {p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "" for p in files}
    graded = parents <= {str(g) for g in range(NUM_GRADES)}
    items = [
        SourceItem(
            str(p.relative_to(root).with_suffix("")), p, int(p.relative_to(root).parts[0]) if graded else UNLABELLED
        )
        for p in files
    ]
    skipped: list[Skip] = []
    seen: set[str] = set()
    unique = []
    for item in items:  # x.png and x.jpg in one folder would share an id
        if item.item_id in seen:
            skipped.append(Skip(str(item.path), f"another image already has the id {item.item_id!r}", "duplicate id"))
            continue
        seen.add(item.item_id)
        unique.append(item)
    return Discovery("folder", unique, skipped)
