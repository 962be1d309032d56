"""What every reader returns: the images found, with labels, and what was skipped and why."""

from __future__ import annotations

import dataclasses
from pathlib import Path

#: Label of an image without a grade (unlabelled folders, CT pretraining data).
UNLABELLED = -1

#: Extensions read as ordinary images; DICOM files are recognised separately.
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp")


@dataclasses.dataclass(frozen=True)
class SourceItem:
    """One input image: a stable id (unique in the data set), its file and its grade."""

    item_id: str
    path: Path
    label: int = UNLABELLED


@dataclasses.dataclass(frozen=True)
class Skip:
    """An input left out, with where (a file, or `file:line` of a CSV), why, and a short
    category (`kind`) under which the end-of-run summary counts it."""

    where: str
    problem: str
    kind: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclasses.dataclass
class Discovery:
    """The result of reading a layout: items in a deterministic order plus the skips."""

    layout: str
    items: list[SourceItem]
    skipped: list[Skip]
