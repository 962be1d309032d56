"""Readers for the labelled layouts with a CSV of grades: EyePACS (Kaggle DR 2015) and APTOS 2019.

EyePACS: `train/<image>.jpeg` and `trainLabels.csv` with columns `image,level`.
APTOS 2019: `train_images/<id_code>.png` and `train.csv` with columns `id_code,diagnosis`.

CSV files from the wild carry a byte-order mark, stray spaces, blank lines, duplicated rows and
grades outside 0-4; each such row is skipped with a `file:line: problem` report (or raises in
strict mode, upstream), and every image without a row is reported too.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from fedgan.config import NUM_GRADES
from fedgan.data.sources.base import IMAGE_SUFFIXES, Discovery, Skip, SourceItem
from fedgan.errors import DataError


@dataclasses.dataclass(frozen=True)
class CsvLayout:
    name: str
    labels_file: str  # default CSV name next to the images folder
    id_column: str
    label_column: str
    image_folders: tuple[str, ...]  # tried in order, relative to the input folder


EYEPACS = CsvLayout("eyepacs", "trainLabels.csv", "image", "level", ("train", "."))
APTOS = CsvLayout("aptos", "train.csv", "id_code", "diagnosis", ("train_images", "."))


def parse_grade(text: str) -> int:
    """A grade 0-4 from CSV text ("2", " 2 ", "2.0"); raises ValueError with the reason."""
    value = text.strip()
    if not value:
        raise ValueError("missing grade")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"grade {value!r} is not a number") from None
    if not number.is_integer():
        raise ValueError(f"grade {value!r} is not a whole number")
    if not 0 <= number < NUM_GRADES:
        raise ValueError(f"grade {value} is outside 0-{NUM_GRADES - 1}")
    return int(number)


def read_label_csv(path: Path, id_column: str, label_column: str) -> tuple[dict[str, int], list[Skip], set[str]]:
    """Grades by id from a CSV; bad rows become skips. Ids with conflicting duplicates are dropped.

    Also returns the ids whose rows were rejected, so their images are not reported a second
    time as having no row.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")  # utf-8-sig strips a byte-order mark
    except FileNotFoundError:
        raise DataError(path, "labels CSV not found (pass --labels to point at it)") from None
    except UnicodeDecodeError:
        raise DataError(path, "labels CSV is not UTF-8 text") from None
    rows = csv.reader(text.splitlines())
    header = [name.strip().lower() for name in next(rows, [])]
    for column in (id_column, label_column):
        if column not in header:
            raise DataError(path, f"no {column!r} column (found: {', '.join(header) or 'nothing'})")
    id_at, label_at = header.index(id_column), header.index(label_column)
    labels: dict[str, int] = {}
    first_line: dict[str, int] = {}
    conflicting: set[str] = set()
    rejected: set[str] = set()
    skipped: list[Skip] = []
    for line_number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line_number}"
        if len(row) <= max(id_at, label_at):
            skipped.append(
                Skip(
                    where,
                    f"row has {len(row)} fields, expected at least {max(id_at, label_at) + 1}",
                    "malformed CSV row",
                )
            )
            continue
        image_id = row[id_at].strip()
        if Path(image_id).suffix.lower() in IMAGE_SUFFIXES:  # some CSVs name the file, not the id
            image_id = Path(image_id).stem
        try:
            grade = parse_grade(row[label_at])
        except ValueError as exc:
            rejected.add(image_id)
            skipped.append(
                Skip(where, f"{image_id}: {exc}", "missing grade" if "missing" in str(exc) else "invalid grade")
            )
            continue
        if image_id in labels:
            if labels[image_id] != grade:
                conflicting.add(image_id)
                skipped.append(
                    Skip(
                        where,
                        f"{image_id}: grade {grade} conflicts with grade {labels[image_id]} on line "
                        f"{first_line[image_id]}; id dropped",
                        "conflicting grades",
                    )
                )
            else:
                skipped.append(
                    Skip(
                        where,
                        f"{image_id}: duplicate of line {first_line[image_id]} (same grade, kept once)",
                        "duplicate row",
                    )
                )
            continue
        labels[image_id] = grade
        first_line[image_id] = line_number
    for image_id in conflicting:
        del labels[image_id]
    return labels, skipped, rejected | conflicting


def index_images(folder: Path) -> dict[str, Path]:
    """Image files in `folder` by stem (one directory listing instead of a stat per CSV row)."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def find_image_folder(root: Path, layout: CsvLayout) -> Path:
    for name in layout.image_folders:
        candidate = root / name
        if candidate.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in candidate.iterdir()):
            return candidate
    raise DataError(root, f"no images found for the {layout.name} layout (looked in {', '.join(layout.image_folders)})")


def read_csv_layout(root: Path, layout: CsvLayout, labels_csv: Path | None = None) -> Discovery:
    """Pair each CSV row with its image; images without a row and rows without an image are skips."""
    labels_path = labels_csv or root / layout.labels_file
    labels, skipped, rejected = read_label_csv(labels_path, layout.id_column, layout.label_column)
    images = index_images(find_image_folder(root, layout))
    items = [SourceItem(image_id, images[image_id], grade) for image_id, grade in labels.items() if image_id in images]
    skipped += [
        Skip(str(labels_path), f"{image_id}: no image file with this id", "no image for id")
        for image_id in labels
        if image_id not in images
    ]
    skipped += [
        Skip(str(path), f"no row in {labels_path.name}", "no label row")
        for image_id, path in images.items()
        if image_id not in labels and image_id not in rejected
    ]
    items.sort(key=lambda item: item.item_id)
    return Discovery(layout.name, items, skipped)


def write_label_csv(folder: Path, layout: CsvLayout, rows: list[tuple[str, int]]) -> Path:
    """`folder/<layout's CSV>` with (id, grade) rows: what our generators and `fedgan sample` write."""
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow([layout.id_column, layout.label_column])
    writer.writerows(rows)
    path = Path(folder) / layout.labels_file
    path.write_text(table.getvalue(), encoding="utf-8")
    return path
