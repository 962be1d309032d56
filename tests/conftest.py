"""Small real data sets, generated once per test session with the project's own generators."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgan.data.sources.synth_sets import write_ct_set, write_fundus_set


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


def small_store(source: Path, out: Path, size: int, heldout: float) -> Path:
    """`source` prepared at `size` px with `heldout` of each grade held out (one worker, quiet)."""
    from fedgan.config import PreprocessConfig, StoreConfig
    from fedgan.data.prepare import prepare_store

    prepare_store(
        source,
        out,
        preprocess_config=PreprocessConfig(size=size),
        store_config=StoreConfig(heldout_fraction=heldout),
        workers=1,
        progress=False,
    )
    return out
