"""`fedgan export`: a release holds the sampling generator and its provenance, and nothing else."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
from helpers import CONDITIONAL, LOCAL, small_store

from fedgan.errors import FedGANError
from fedgan.evaluation.evaluate import evaluate_run, generated_set
from fedgan.evaluation.privacy import audit
from fedgan.evaluation.results import read_result
from fedgan.synthetic import write_synthetic_set
from fedgan.training.release import export_release, read_release
from fedgan.training.run import train_centralised
from fedgan.training.trained import load_trained


@pytest.fixture(scope="module")
def store(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_store(fundus_set, tmp_path_factory.mktemp("stores") / "fundus16", 16, 0.25)


@pytest.fixture(scope="module")
def run(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "central"
    train_centralised(
        store,
        out,
        model_config=CONDITIONAL,
        conditional=True,
        train_config=dataclasses.replace(LOCAL, epochs=2),
        progress=False,
    )
    return out


def test_a_release_makes_the_runs_images_without_its_discriminator_or_optimisers(run: Path, tmp_path: Path) -> None:
    done = export_release(run, tmp_path / "release.pt")  # no best.pt in this run: auto takes latest
    assert done.source == (run / "checkpoints" / "epoch-0002.pt").resolve() and done.progress.startswith("step ")
    data = read_release(done.path)
    assert data is not None and "discriminator" not in data and not any(k.startswith("opt") for k in data)
    assert data["source"]["sha256"] == hashlib.sha256(done.source.read_bytes()).hexdigest()
    assert "[data.train]" in data["run_record"] and done.megabytes < done.checkpoint_megabytes / 3
    frequencies = torch.full((5,), 0.2).numpy()
    from_release, grades = generated_set(load_trained(done.path), 12, frequencies, seed=3)
    from_run, same_grades = generated_set(load_trained(run), 12, frequencies, seed=3)
    assert (from_release == from_run).all() and (grades == same_grades).all()  # the moving average, exactly


def test_a_release_samples_a_dataset_and_refuses_the_white_box_audit(run: Path, store: Path, tmp_path: Path) -> None:
    release = export_release(run, tmp_path / "release.pt").path
    summary = write_synthetic_set(release, tmp_path / "synthetic", count=10, progress=False)
    evaluate_run(release, store, count=20)  # evaluated on its own: the result lies beside the file
    assert read_result(release) is not None and (tmp_path / "release.metrics.json").is_file()
    assert summary.images == 10 and (tmp_path / "synthetic" / "trainLabels.csv").is_file()
    with pytest.raises(FedGANError, match=r"release\.pt: a release holds no discriminator"):
        audit(release, store, Path(f"{store}:heldout"))


def test_asking_for_a_best_checkpoint_the_run_never_measured_is_a_one_line_error(run: Path, tmp_path: Path) -> None:
    with pytest.raises(FedGANError, match="has no best.pt"):
        export_release(run, tmp_path / "release.pt", which="best")
    assert not (tmp_path / "release.pt").exists()
