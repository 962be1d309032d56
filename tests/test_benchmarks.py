"""The quality benchmarks still run: each one end to end on a tiny store, a few steps long.

Why: the benchmarks share helpers (`recipe_quality.store_configs`), and a change to one broke
another's call without any test noticing until a long run failed at its start. These runs check
the wiring and the printed table, not the figures (which need the full sizes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import small_store

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
TINY_WIDTHS = ["--generator-width", "32", "--discriminator-width", "8", "--batch-size", "8"]


@pytest.fixture(scope="module")
def store(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_store(fundus_set, tmp_path_factory.mktemp("stores") / "fundus16", size=16, heldout=0.5)


def benchmark(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_grade_carry_evaluates_each_variant_at_its_steps(store: Path, tmp_path: Path) -> None:
    out = benchmark(
        "grade_carry.py",
        *("--store", str(store), "--recipes", "graded,small-data+grade_head=true", "--steps", "4"),
        *("--eval-at", "2,4", "--out", str(tmp_path), *TINY_WIDTHS),
    )
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["variant"], r["step"]) for r in rows] == [
        ("graded", 2),
        ("graded", 4),
        ("small-data+grade_head=true", 2),
        ("small-data+grade_head=true", 4),
    ]
    assert "real-trained grader kappa" in out and all(-1 <= r["tstr"] <= 1 for r in rows)


@pytest.mark.slow
def test_recipe_quality_trains_every_recipe_for_every_seed(store: Path, tmp_path: Path) -> None:
    out = benchmark(
        "recipe_quality.py",
        *("--store", str(store), "--recipes", "small-data,graded", "--seeds", "0,1", "--budget", "1"),
        *("--eval-every", "1", "--draws", "2", "--out", str(tmp_path), *TINY_WIDTHS),
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["recipe"], r["seed"]) for r in results] == [
        ("small-data", 0),
        ("small-data", 1),
        ("graded", 0),
        ("graded", 1),
    ]
    assert all(r["steps"] > 0 and r["curve"] for r in results)
    across = out[out.index("across seeds") :].splitlines()
    assert across[1].split()[0] == "small-data" and across[2].split()[0] == "graded"


@pytest.mark.slow
def test_sample_gap_reports_every_block_and_the_grade_heads_reading(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train = [sys.executable, "-m", "fedgan", "train", "--store", str(store), "--out", str(run), "--conditional"]
    train += ["--recipe", "graded", "--epochs", "1", "--seed", "0", "-q", *TINY_WIDTHS]
    subprocess.run(train, check=True, capture_output=True, timeout=300)
    out = benchmark("sample_gap.py", "--run", str(run), "--store", str(store))
    blocks = [line.split()[0] for line in out.splitlines()[2:9]]
    assert blocks == ["layout", "band", "orientation", "coherence", "vessels", "checkerboard", "all"]
    assert "mean moved onto the real mean" in out
    readings = [line for line in out.splitlines() if "after a 3x3 median filter" in line]
    assert len(readings) == 2 and all(0 <= float(line.split()[-1]) <= 1 for line in readings)
