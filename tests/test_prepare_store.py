"""`prepare` end to end on real files: store contents, held-out split, bad input, atomicity."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fedgan.atomic import OWNER_MARK, staged_directory
from fedgan.config import PreprocessConfig, StoreConfig
from fedgan.data import store as store_module
from fedgan.data.prepare import prepare_store
from fedgan.data.store import Store
from fedgan.errors import DataError, FedGANError

SMALL = PreprocessConfig(size=32)


@pytest.fixture(scope="module")
def fundus_store(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "fundus"
    prepare_store(
        fundus_set,
        out,
        preprocess_config=SMALL,
        store_config=StoreConfig(shard_size=16, heldout_fraction=0.25, seed=1),
        workers=2,
        progress=False,
    )
    return out


def test_store_contents_match_the_source(fundus_set: Path, fundus_store: Path) -> None:
    store = Store(fundus_store)
    m = store.manifest
    assert m["count"] == 40 and store.image_shape == (1, 32, 32)
    assert m["splits"]["train"]["count"] + m["splits"]["heldout"]["count"] == 40
    assert [s["count"] for s in m["splits"]["train"]["shards"]] == [16, 14]
    labels_csv = dict(line.split(",") for line in (fundus_set / "trainLabels.csv").read_text().splitlines()[1:])
    images, labels = store.load("train")
    ids = [e["id"] for e in store.entries("train")]
    assert [int(labels_csv[i]) for i in ids] == labels.tolist()
    assert images.dtype == np.float32 and images.min() >= -1 and images.max() <= 1
    assert all(e["source"] == f"train/{e['id']}.jpeg" for e in m["records"])
    assert m["preprocess"]["size"] == 32 and m["preprocess"]["clahe-clip"] == 2.0
    assert store.verify() == []


def test_heldout_split_is_stratified_and_disjoint(fundus_store: Path) -> None:
    store = Store(fundus_store)
    train_ids = {e["id"] for e in store.entries("train")}
    heldout_ids = {e["id"] for e in store.entries("heldout")}
    assert not train_ids & heldout_ids
    for grade, total in store.manifest["per_grade"].items():
        held = store.manifest["splits"]["heldout"]["per_grade"].get(grade, 0)
        assert held == round(total * 0.25)
    assert {r.item_id for r in store.records("train")} == train_ids  # training reads no held-out record


def test_records_match_a_direct_preprocess(fundus_set: Path, fundus_store: Path) -> None:
    from fedgan.data.decode import load_pixels
    from fedgan.data.preprocess import preprocess

    record = next(Store(fundus_store).records("heldout"))
    expected = preprocess(load_pixels(fundus_set / "train" / f"{record.item_id}.jpeg", SMALL), SMALL)
    assert np.array_equal(record.image, expected)


def test_same_seed_same_shards_for_any_worker_count(fundus_set: Path, tmp_path: Path) -> None:
    hashes = []
    for workers in (1, 2):
        prepare_store(fundus_set, tmp_path / str(workers), preprocess_config=SMALL, workers=workers, progress=False)
        hashes.append(
            [
                s["sha256"]
                for split in ("train", "heldout")
                for s in Store(tmp_path / str(workers)).manifest["splits"][split]["shards"]
            ]
        )
    assert hashes[0] == hashes[1]


def test_a_partition_reads_only_the_shards_that_hold_it(
    fundus_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(fundus_store)
    everything, all_labels = store.load("train")
    opened: list[str] = []
    original = store_module.read_records
    monkeypatch.setattr(
        store_module, "read_records", lambda path, **kw: opened.append(path.name) or original(path, **kw)
    )
    wanted = np.array([17, 3, 20])  # shard 0 holds records 0-15, shard 1 holds 16-29
    images, labels = store.load("train", wanted)
    assert np.array_equal(images, everything[np.sort(wanted)]) and np.array_equal(labels, all_labels[np.sort(wanted)])
    second = store.manifest["splits"]["train"]["shards"][1]["file"]
    opened.clear()
    store.load("train", np.array([16, 29]))
    assert opened == [second]  # the first shard is never opened


def test_a_shard_shorter_than_its_manifest_entry_is_named(fundus_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(fundus_store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][1]["count"] += 1  # the manifest promises a record the file lacks
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"train-00001.*holds 14 records, the manifest 15"):
        Store(copy).load("train", np.array([20]))


def test_tampered_shard_is_detected(fundus_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(fundus_store, copy)
    shard = copy / Store(copy).manifest["splits"]["train"]["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    assert Store(copy).verify() == [shard.name]


def messy_folder(root: Path) -> Path:
    """A graded image folder with one of each kind of bad file next to good ones."""
    good = np.zeros((80, 80, 3), np.uint8)
    cv2.circle(good, (40, 40), 35, (40, 90, 200), -1)
    for grade in (0, 2):
        (root / str(grade)).mkdir(parents=True)
        for k in range(3):
            cv2.imwrite(str(root / str(grade) / f"ok{k}.png"), good)
    (root / "0" / "empty.jpg").write_bytes(b"")
    (root / "2" / "text.jpg").write_text("not a picture")
    ok, jpeg = cv2.imencode(".jpg", good)
    (root / "2" / "cut.jpg").write_bytes(jpeg.tobytes()[:300])
    cv2.imwrite(str(root / "2" / "deep.png"), (good.astype(np.uint16) * 257))
    return root


def test_bad_files_are_skipped_and_summarised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = messy_folder(tmp_path / "in")
    summary = prepare_store(root, tmp_path / "store", preprocess_config=SMALL, workers=1, progress=False)
    assert summary.written["train"] + summary.written["heldout"] == 7  # 6 ok + the 16-bit PNG
    assert sorted(Path(s.where).name for s in summary.skipped) == ["cut.jpg", "empty.jpg", "text.jpg"]
    assert summary.skip_reasons() == {"empty file": 1, "not an image": 1, "truncated": 1}
    logged = [r.getMessage() for r in caplog.records]
    assert any(line.endswith("empty.jpg: empty file (0 bytes)") for line in logged)
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert len(manifest["skipped"]) == 3


def test_strict_mode_fails_and_leaves_nothing(tmp_path: Path) -> None:
    root = messy_folder(tmp_path / "in")
    with pytest.raises(FedGANError, match=r"empty\.jpg: empty file.*--strict|--strict"):
        prepare_store(root, tmp_path / "store", preprocess_config=SMALL, strict=True, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_existing_store_needs_overwrite(fundus_set: Path, fundus_store: Path) -> None:
    with pytest.raises(FedGANError, match="--overwrite"):
        prepare_store(fundus_set, fundus_store, preprocess_config=SMALL, progress=False)


def test_staged_directory_discards_on_error_and_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_directory(target) as staging:
            (staging / "half").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with staged_directory(target) as staging:
        (staging / "v1").write_text("1")
    with staged_directory(target, overwrite=True) as staging:
        (staging / "v2").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == [OWNER_MARK, "v2"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_files_are_synced_before_they_are_renamed_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash must leave the old content or all of the new: the data reaches the disk before the name points at it."""
    import os

    from fedgan.atomic import write_bytes_atomic

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_bytes_atomic(tmp_path / "x.pt", b"weights")
    assert (
        events == ["fsync", "replace", "fsync"] and (tmp_path / "x.pt").read_bytes() == b"weights"
    )  # file, rename, folder
    events.clear()  # a state that need not survive a power loss: still renamed whole into place, never synced
    write_bytes_atomic(tmp_path / "x.pt", b"mid-round", durable=False)
    assert events == ["replace"] and (tmp_path / "x.pt").read_bytes() == b"mid-round"
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_overwrite_never_deletes_what_fedgan_did_not_write(fundus_set: Path, tmp_path: Path) -> None:
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    with pytest.raises(FedGANError, match=f"{thesis}: --overwrite replaces only folders FedGAN wrote"):
        prepare_store(fundus_set, thesis, preprocess_config=SMALL, overwrite=True, progress=False)
    for out, what in ((fundus_set, "is the input"), (fundus_set.parent, "is a folder holding the input")):
        with pytest.raises(FedGANError, match=what):
            prepare_store(fundus_set, out, preprocess_config=SMALL, overwrite=True, progress=False)
    assert (thesis / "chapter1.tex").read_text() == "years of work" and any(fundus_set.iterdir())


@pytest.mark.slow
def test_interrupted_prepare_leaves_no_store(tmp_path: Path) -> None:
    """Ctrl-C in the middle of a real `fedgan prepare` process: no store, no staging folder."""
    # 360 photographs: enough shards after the second that prepare cannot finish before the signal lands
    from fedgan.data.sources.synth_sets import write_fundus_set

    write_fundus_set(tmp_path / "raw", count=360, size=256, seed=2, workers=2, progress=False)
    command = [
        sys.executable,
        "-m",
        "fedgan",
        "prepare",
        "--input",
        str(tmp_path / "raw"),
        "--out",
        str(tmp_path / "store"),
        "--workers",
        "1",
        "--shard-size",
        "8",
        "-q",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".store.partial-") and any(p.glob("train-00001*")) for p in tmp_path.iterdir()):
        assert process.poll() is None, "prepare finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
