"""Readers for EyePACS, APTOS, image folders and DICOM trees, including the messy CSVs of real life."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fedgan.data.prepare import detect_layout, discover
from fedgan.data.sources.base import UNLABELLED
from fedgan.data.sources.tabular import parse_grade
from fedgan.errors import DataError, FedGANError


def write_image(path: Path, value: int = 120, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((size, size, 3), value, np.uint8)
    cv2.circle(image, (size // 2, size // 2), size // 3, (value // 2, value, 200), -1)
    assert cv2.imwrite(str(path), image)
    return path


def test_eyepacs_csv_with_bom_spaces_duplicates_and_bad_rows(tmp_path: Path) -> None:
    for name in ("1_left", "1_right", "2_left", "3_left", "4_left", "5_left", "orphan"):
        write_image(tmp_path / "train" / f"{name}.jpeg")
    (tmp_path / "trainLabels.csv").write_text(
        "\ufeff image , level \n"
        " 1_left , 0 \n"
        "1_right,2\n"
        "\n"
        "2_left,7\n"  # out of range
        "3_left,\n"  # missing grade
        "4_left,1\n"
        "4_left,1\n"  # harmless duplicate
        "5_left,3\n"
        "5_left,4\n"  # conflicting duplicate: the id is dropped
        "ghost,2\n",  # no image
        encoding="utf-8",
    )
    found = discover(tmp_path)
    assert found.layout == "eyepacs"
    assert [(i.item_id, i.label) for i in found.items] == [("1_left", 0), ("1_right", 2), ("4_left", 1)]
    problems = [str(s) for s in found.skipped]
    csv_path = str(tmp_path / "trainLabels.csv")
    assert f"{csv_path}:5: 2_left: grade 7 is outside 0-4" in problems
    assert f"{csv_path}:6: 3_left: missing grade" in problems
    assert any(p.startswith(f"{csv_path}:8: 4_left: duplicate of line 7") for p in problems)
    assert any(p.startswith(f"{csv_path}:10: 5_left: grade 4 conflicts with grade 3") for p in problems)
    assert f"{csv_path}: ghost: no image file with this id" in problems
    assert f"{tmp_path / 'train' / 'orphan.jpeg'}: no row in trainLabels.csv" in problems
    assert not any(
        p.startswith(str(tmp_path / "train" / "5_left.jpeg")) for p in problems
    )  # reported once, by its rows
    assert not any(p.startswith(str(tmp_path / "train" / "2_left.jpeg")) for p in problems)
    assert len(problems) == 6


def test_aptos_layout(tmp_path: Path) -> None:
    for code in ("000c1434d8d7", "001639a390f0"):
        write_image(tmp_path / "train_images" / f"{code}.png")
    (tmp_path / "train.csv").write_text("id_code,diagnosis\n000c1434d8d7,2\n001639a390f0,4\n")
    found = discover(tmp_path)
    assert found.layout == "aptos"
    assert [(i.item_id, i.label, i.path.suffix) for i in found.items] == [
        ("000c1434d8d7", 2, ".png"),
        ("001639a390f0", 4, ".png"),
    ]
    assert found.skipped == []


def test_labels_csv_given_explicitly_and_missing_column(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "a.jpeg")
    (tmp_path / "elsewhere.csv").write_text("image,grade\na,1\n")
    with pytest.raises(DataError, match="no 'level' column"):
        discover(tmp_path, "eyepacs", tmp_path / "elsewhere.csv")
    with pytest.raises(DataError, match="labels CSV not found"):
        discover(tmp_path, "eyepacs")


def test_image_folder_graded_by_subfolder(tmp_path: Path) -> None:
    write_image(tmp_path / "0" / "a.png")
    write_image(tmp_path / "3" / "b.jpg")
    write_image(tmp_path / "3" / "c.png")
    found = discover(tmp_path)
    assert found.layout == "folder"
    assert [(i.item_id, i.label) for i in found.items] == [("0/a", 0), ("3/b", 3), ("3/c", 3)]


def test_image_folder_unlabelled_and_duplicate_stems(tmp_path: Path) -> None:
    write_image(tmp_path / "scans" / "x.png")
    write_image(tmp_path / "scans" / "x.jpg")
    write_image(tmp_path / "y.png")
    found = discover(tmp_path)
    assert {i.label for i in found.items} == {UNLABELLED}
    assert [i.item_id for i in found.items] == ["scans/x", "y"]
    assert len(found.skipped) == 1 and "already has the id" in found.skipped[0].problem


def test_dicom_tree_in_slice_order(ct_set: Path) -> None:
    assert detect_layout(ct_set) == "dicom"
    found = discover(ct_set)
    assert len(found.items) == 12
    first_series = [i.path.name for i in found.items[:6]]
    assert first_series == [f"{k}.dcm" for k in range(1, 7)]


def test_missing_or_empty_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FedGANError, match="input folder not found"):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        discover(tmp_path / "empty")


@pytest.mark.parametrize(("text", "grade"), [("0", 0), (" 4 ", 4), ("2.0", 2)])
def test_grades_parse(text: str, grade: int) -> None:
    assert parse_grade(text) == grade


@pytest.mark.parametrize(
    ("text", "message"), [("", "missing"), ("x", "not a number"), ("1.5", "whole"), ("5", "outside"), ("-1", "outside")]
)
def test_bad_grades_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_grade(text)
