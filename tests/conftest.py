"""Small real data sets, generated once per test session with the project's own generators."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedgan.data.sources.synth_sets import write_ct_set, write_fundus_set

# `make test` runs four pytest-xdist workers on a 2-core CI: one torch thread each
if "PYTEST_XDIST_WORKER" in os.environ:
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"  # subprocesses too (the CLI's, Flower's apps)
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def evaluator_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Evaluators are cached outside stores, in $FEDGAN_CACHE: a session's own, not the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("fedgan-cache")
    before = os.environ.get("FEDGAN_CACHE")
    os.environ["FEDGAN_CACHE"] = str(folder)  # subprocesses (CLI tests, Flower's apps) inherit it
    yield folder
    if before is None:
        del os.environ["FEDGAN_CACHE"]
    else:
        os.environ["FEDGAN_CACHE"] = before


@pytest.fixture(scope="session")
def fundus_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 photographs (192 px) in the EyePACS layout, every grade present."""
    out = tmp_path_factory.mktemp("data") / "eyepacs"
    write_fundus_set(
        out, count=40, size=192, seed=7, grade_mix=(0.4, 0.15, 0.15, 0.15, 0.15), workers=2, progress=False
    )
    return out


@pytest.fixture(scope="session")
def ct_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two patients of six 128 px slices each, as DICOM series."""
    out = tmp_path_factory.mktemp("data") / "ct"
    write_ct_set(out, patients=2, slices=6, size=128, seed=3, workers=1, progress=False)
    return out


@pytest.fixture()
def flower_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower builds messages only inside a run; the ServerApp's process sets this task identity."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


@pytest.fixture()
def in_process(monkeypatch: pytest.MonkeyPatch, flower_task: None) -> None:
    """`federate` and `resume_federation` run their rounds in this process instead of on Flower's
    simulation engine: the same ServerApp and ClientApp, without the engine's start of 15 s or more
    a run. The engine itself is tested by test_federation's label-split and skewed runs and the
    command line, and the deployment engine by test_deployment."""
    from fedgan.federation import inprocess, simulate

    monkeypatch.setattr(simulate, "start_engine", inprocess.run_in_process)
