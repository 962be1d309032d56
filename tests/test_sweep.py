"""`fedgan sweep` at tiny size: baseline + federations, one evaluator, one reference, resumable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import TINY, TINY_DDPM, small_store

from fedgan.config import TrainConfig
from fedgan.sweep import CENTRALISED, SweepSettings, SweptModel, relative, run_sweep
from fedgan.training.recipes import apply_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_store(fundus_set, tmp_path_factory.mktemp("stores") / "sweep16", size=16, heldout=0.4)


@pytest.mark.usefixtures("in_process")
def test_sweep_compares_sizes_and_models_with_one_evaluator_and_resumes(store: Path, tmp_path: Path) -> None:
    train = TrainConfig(epochs=1, batch_size=4, sample_count=10)
    settings = SweepSettings(
        store,
        tmp_path / "sweep",
        clients=(2, 3),
        rounds=2,
        conditional=True,
        count=30,
        models=(SweptModel(TINY_DDPM, apply_recipe("ddpm", TINY_DDPM, train)[1]), SweptModel(TINY, train)),
    )
    rows = run_sweep(settings)
    assert [r["member"] for r in rows] == [
        CENTRALISED,
        "clients-2",
        "clients-3",
        "ddpm-centralised",
        "ddpm-clients-2",
        "ddpm-clients-3",
    ]  # the GAN first: its centralised discriminator is the realism reference for every member
    assert [r["model"] for r in rows] == ["gan"] * 3 + ["ddpm"] * 3
    for base in (rows[0], rows[3]):  # each model's ratios are to its own centralised run
        assert base["fd_vs_centralised"] == 1.0 and base["paper_realism_vs_centralised"] == 1.0
    assert rows[4]["kid_vs_centralised"] == pytest.approx(rows[4]["kid"] / rows[3]["kid"])
    results = [json.loads((settings.out / r["member"] / "eval" / "metrics.json").read_text()) for r in rows]
    assert len({r["evaluator_sha256"] for r in results}) == 1  # one fixed evaluator
    assert {r["paper_realism"]["reference"] for r in results} == {str((settings.out / CENTRALISED).resolve())}
    assert [r["checkpoint_round"] for r in results] == [2] * 6  # same budget: 2 epochs vs 2 rounds x 1 local epoch
    page = (settings.out / "report.html").read_text()
    assert "realism (paper)" in page and "ddpm-clients-3" in page and page.count("data:image/png;base64,") == 6
    stamps = {p: p.stat().st_mtime_ns for p in settings.out.glob("*/checkpoints/*.pt")}
    assert run_sweep(settings) == rows  # finished members are neither retrained nor re-evaluated
    assert {p: p.stat().st_mtime_ns for p in settings.out.glob("*/checkpoints/*.pt")} == stamps


def test_fractions_of_the_baseline_only_where_the_baseline_is_above_zero() -> None:
    metrics = ("paper_realism", "fd", "kid", "precision", "recall", "coverage", "tstr_kappa")
    base = {"model": "gan", "algorithm": ""} | dict(
        zip(metrics, (0.25, 654.0, 13.6, 0.0, 0.0, 0.0, -0.045), strict=True)
    )
    member = {"model": "gan", "algorithm": "mdgan"} | dict(
        zip(metrics, (0.22, 691.0, 15.0, 0.0, 0.0, 0.0, -0.063), strict=True)
    )
    relative([base, member])
    assert member["kid_vs_centralised"] == pytest.approx(15.0 / 13.6)
    assert member["paper_realism_vs_centralised"] == pytest.approx(0.22 / 0.25)
    # a kappa below chance, and a precision of 0, give no fraction (a sweep once printed "1.40x" here)
    assert member["tstr_kappa_vs_centralised"] is None and member["precision_vs_centralised"] is None


def test_sweep_command_line_rejects_bad_sizes(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedgan",
            "sweep",
            "--store",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--clients",
            "3,x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "--clients must be comma-separated integers" in result.stderr
