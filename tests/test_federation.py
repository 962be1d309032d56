"""Federated training on Flower's simulation engine, at tiny sizes on the CPU."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import LOCAL, TINY, max_difference

from fedgan.config import AlgorithmConfig, GANConfig, PreprocessConfig, StoreConfig, TrainConfig
from fedgan.data.partition import partition
from fedgan.data.prepare import prepare_store
from fedgan.data.store import Store
from fedgan.errors import FedGANError
from fedgan.federation.settings import FederationSettings, SecAggSettings
from fedgan.federation.simulate import (
    MIN_LOCAL_STEPS,
    federate,
    few_local_steps,
    local_steps,
    resume_federation,
    with_partition_sizes,
)
from fedgan.federation.weights import global_weights, load_global_weights
from fedgan.training.checkpoint import read_checkpoint
from fedgan.training.loop import new_state
from fedgan.training.run import train_centralised

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "fed16"
    prepare_store(
        fundus_set,
        out,
        preprocess_config=PreprocessConfig(size=16),
        store_config=StoreConfig(heldout_fraction=0.1),
        workers=1,
        progress=False,
    )
    return out


def lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def read_config(run: Path) -> dict:
    return tomllib.loads((run / "config.toml").read_text())


def test_weights_round_trip_skips_integer_buffers() -> None:
    state = new_state(TINY, LOCAL, torch.device("cpu"))
    flat = global_weights(state)
    assert not any(k.endswith("num_batches_tracked") for k in flat)
    assert any(k.startswith("generator.") for k in flat) and any(k.startswith("discriminator.") for k in flat)
    other = new_state(TINY, TrainConfig(seed=99), torch.device("cpu"))
    load_global_weights(other, flat)
    assert all(torch.equal(v, global_weights(other)[k]) for k, v in flat.items())


@pytest.fixture(scope="module")
def label_split_run(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The paper's setting at tiny size: 3 hospitals, label-split, 2 rounds of plain FedAvg."""
    return federate(
        store,
        tmp_path_factory.mktemp("runs") / "fed",
        clients=3,
        partition_kind="label-split",
        rounds=2,
        model_config=TINY,
        train_config=dataclasses.replace(LOCAL, tensorboard=True),
        disclose=("grades", "losses"),
    )


def test_three_hospitals_two_rounds_partition_honoured(store: Path, label_split_run: Path) -> None:
    run = label_split_run
    records = lines(run)
    clients = [r for r in records if "client" in r]
    assert sorted((r["round"], r["client"]) for r in clients) == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    labels = Store(store).labels("train")
    parts = partition(labels, 3, "label-split", LOCAL.seed)
    for r in clients:  # each hospital trained on exactly its own partition, grade by grade
        expected = [int((labels[parts[r["client"]]] == g).sum()) for g in range(5)]
        assert r["grades"] == expected and r["examples"] == len(parts[r["client"]])
        assert r["bytes_sent"] == r["bytes_received"] > 0 and np.isfinite([r["d_loss"], r["g_loss"]]).all()
    assert [r["round"] for r in records if r.get("aggregate")] == [1, 2]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["round-0001.png", "round-0002.png"]
    assert read_checkpoint(run)["extra"]["round"] == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()  # --tensorboard: a curve per hospital, per round
    for tag in ("hospital-0/d_loss", "hospital-2/g_loss", "round/d_loss"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    assert [e.step for e in events.Images("samples")] == [1, 2]


@pytest.mark.usefixtures("in_process")
def test_resume_continues_after_the_last_round(store: Path, tmp_path: Path) -> None:
    straight = federate(
        store, tmp_path / "a", clients=2, partition_kind="iid", rounds=2, model_config=TINY, train_config=LOCAL
    )
    stopped = federate(
        store, tmp_path / "b", clients=2, partition_kind="iid", rounds=1, model_config=TINY, train_config=LOCAL
    )
    resume_federation(stopped, rounds=2)
    a, b = read_checkpoint(straight), read_checkpoint(stopped)
    assert b["extra"]["round"] == 2
    for key, value in a["generator"].items():  # same up to the summation order of the average
        assert torch.allclose(value.float(), b["generator"][key].float(), atol=1e-5), key
    assert [r["round"] for r in lines(stopped) if r.get("aggregate")] == [1, 2]
    with pytest.raises(FedGANError, match="already completed 2 of 2"):
        resume_federation(stopped)


@pytest.mark.usefixtures("in_process")
def test_init_from_a_pretrained_checkpoint(store: Path, tmp_path: Path) -> None:
    grouped = GANConfig(**{**TINY.__dict__, "norm": "group"})  # no running statistics to drift
    pretrained = train_centralised(
        store, tmp_path / "pre", model_config=grouped, train_config=TrainConfig(epochs=1, batch_size=4), progress=False
    )
    frozen = TrainConfig(epochs=1, batch_size=4, lr_generator=1e-12, lr_discriminator=1e-12)
    run = federate(
        store,
        tmp_path / "fed",
        clients=2,
        partition_kind="iid",
        rounds=1,
        model_config=grouped,
        train_config=frozen,
        init=tmp_path / "pre",
    )
    after = read_checkpoint(run)["generator"]
    for key, value in pretrained.generator.state_dict().items():
        assert torch.allclose(value, after[key], atol=1e-6), key


def test_impossible_federation_fails_before_starting(store: Path, tmp_path: Path) -> None:
    with pytest.raises(FedGANError, match="only"):
        federate(store, tmp_path / "x", clients=500, rounds=1, model_config=TINY, train_config=LOCAL)
    assert not (tmp_path / "x").exists()


def test_hospitals_with_too_few_local_steps_are_told_a_batch_size_that_gives_enough() -> None:
    sizes = [256, 257, 53, 54, 23, 24, 9, 9, 7, 8]  # the demo store over 10 label-split hospitals
    assert local_steps(sizes, 32, 2) == pytest.approx((16 * (256 + 257) + 2 * 187) / 700)  # 2 steps below 64 images
    advice = few_local_steps(sizes, TrainConfig(epochs=2, batch_size=32))
    assert advice is not None and "averages only 12 local steps" in advice
    advised = int(advice.split("--batch-size ")[-1].split()[0])
    assert local_steps(sizes, advised, 2) >= MIN_LOCAL_STEPS > local_steps(sizes, advised + 1, 2)
    assert few_local_steps(sizes, TrainConfig(epochs=2, batch_size=8)) is None
    assert "more local epochs)" in few_local_steps([3, 3], TrainConfig(epochs=1, batch_size=32))  # no batch is enough


def test_the_short_rounds_warning_is_logged_for_averaging_only(
    store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    short = TrainConfig(epochs=1, batch_size=32)  # a handful of images per hospital
    for name, warned in (("fedavg", True), ("mdgan", False)):  # mdgan's G steps over the pooled images
        caplog.clear()
        settings = FederationSettings(
            store, tmp_path, 3, "label-split", 1, TINY, short, algorithm=AlgorithmConfig(name)
        )
        with_partition_sizes(Store(store), settings, None)
        assert ("local steps" in caplog.text) is warned, name


def test_federate_from_the_command_line(store: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "fedgan",
        "federate",
        "--store",
        str(store),
        "--out",
        str(tmp_path / "r"),
        "--clients",
        "1",
        "--rounds",
        "1",
        "--partition",
        "iid",
        "--generator-width",
        "32",
        "--discriminator-width",
        "8",
        "--latent-dim",
        "8",
        "--batch-size",
        "4",
        "--client-cpus",
        "0.5",  # a fraction of a core: Flower's resources take it, torch gets one thread
        "-q",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "completed 1 round;" in result.stdout
    assert read_config(tmp_path / "r")["config"]["federation"]["client-cpus"] == 0.5


@pytest.fixture(scope="module")
def skewed_store(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Graded folder: 6 images of grade 0, 6 of grade 1, one of grade 4 (label-split: a 1-image hospital)."""
    root = tmp_path_factory.mktemp("skew")
    photos = sorted((fundus_set / "train").glob("*.jpeg"))
    for index, photo in enumerate(photos[:13]):
        grade = 0 if index < 6 else 1 if index < 12 else 4
        (root / "in" / str(grade)).mkdir(parents=True, exist_ok=True)
        (root / "in" / str(grade) / photo.name).write_bytes(photo.read_bytes())
    prepare_store(
        root / "in",
        root / "store",
        preprocess_config=PreprocessConfig(size=16),
        store_config=StoreConfig(heldout_fraction=0),
        workers=1,
        progress=False,
    )
    return root / "store"


@pytest.fixture(scope="module")
def skewed_run(skewed_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return federate(
        skewed_store,
        tmp_path_factory.mktemp("runs") / "skewed",
        clients=3,
        rounds=1,
        model_config=TINY,
        train_config=LOCAL,
    )


def test_a_failing_hospital_is_left_out_with_its_reason(skewed_run: Path) -> None:
    records = lines(skewed_run)
    failed = [r for r in records if "failed" in r and "client" not in r and not r.get("aggregate")]
    assert len(failed) == 1 and "has 1 training image" in failed[0]["failed"]
    aggregate = next(r for r in records if r.get("aggregate"))
    assert aggregate["clients"] == 2 and aggregate["failed"] == 1
    from fedgan.reporting.report import build_report

    page = build_report(skewed_run).read_text()
    assert "Hospital replies left out" in page and "has 1 training image" in page


@pytest.mark.usefixtures("in_process")
def test_too_few_successful_hospitals_fail_the_round(skewed_store: Path, tmp_path: Path) -> None:
    with pytest.raises(FedGANError, match=r"stopped after round 0 of 1: round 1: only 2 hospital\(s\)"):
        federate(
            skewed_store, tmp_path / "fed", clients=3, rounds=1, model_config=TINY, train_config=LOCAL, min_successful=3
        )


def test_global_model_with_averaged_batch_norm_works_on_every_hospital(store: Path, label_split_run: Path) -> None:
    """Averaged running statistics (the generator's batch norm, and its moving average's): in
    eval mode the global D scores every hospital's images finitely and G produces varied
    images, although no hospital saw the others' data."""
    from fedgan.training.checkpoint import restore_state
    from fedgan.training.loop import generate

    state, _ = restore_state(read_checkpoint(label_split_run), torch.device("cpu"))
    norms = [m for m in (*state.generator.modules(), *state.sampler.modules()) if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(bool((m.running_var > 0).all()) for m in norms)
    state.discriminator.eval()
    labels = Store(store).labels("train")
    images, _ = Store(store).load("train")
    with torch.no_grad():
        for part in partition(labels, 3, "label-split", LOCAL.seed):
            scores = torch.sigmoid(state.discriminator(torch.from_numpy(images[part])))
            assert torch.isfinite(scores).all() and 0.001 < scores.mean() < 0.999
    fakes = generate(state, torch.randn(8, TINY.latent_dim))
    assert fakes.std(dim=0).mean() > 1e-3  # not one image repeated


@pytest.mark.usefixtures("in_process")
def test_secure_aggregation_equals_fedavg_within_the_quantisation_bound(
    store: Path, label_split_run: Path, tmp_path: Path
) -> None:
    """Same hospitals, same local training: SecAgg+'s unmasked sum gives plain FedAvg's model up to
    one quantisation step per hospital (hospitals of unequal size, so the weighting is exercised)."""
    run = federate(
        store,
        tmp_path / "secure",
        clients=3,
        partition_kind="label-split",
        rounds=1,
        model_config=TINY,
        train_config=LOCAL,
        secagg=SecAggSettings(),
    )
    sizes = [len(p) for p in partition(Store(store).labels("train"), 3, "label-split", LOCAL.seed)]
    settings = SecAggSettings(max_weight=max(sizes))
    difference = max_difference(
        read_checkpoint(label_split_run / "checkpoints" / "round-0001.pt"), read_checkpoint(run)
    )
    assert 0 < difference <= settings.error_bound(sizes) + 1e-6  # nonzero: the sum really went through the quantiser
    clients = [r for r in lines(run) if "client" in r]
    assert sorted(r["examples"] for r in clients) == sorted(sizes)
    assert all(r["clipped"] == 0 and 0 < r["largest_update"] < settings.clip for r in clients)
    assert all(r["bytes_sent"] > r["bytes_received"] for r in clients)  # int64 masked vectors: twice the float32 model
    assert read_config(run)["config"]["secagg"]["max-weight"] == max(sizes)


@pytest.mark.usefixtures("in_process")
def test_secure_aggregation_survives_a_hospital_dropping_out(
    skewed_store: Path, skewed_run: Path, tmp_path: Path
) -> None:
    """The 1-image hospital fails after the key exchange; the others' key shares remove its masks
    and the round completes with the same model plain FedAvg builds from the two survivors."""
    run = federate(
        skewed_store,
        tmp_path / "secure",
        clients=3,
        rounds=1,
        model_config=TINY,
        train_config=LOCAL,
        secagg=SecAggSettings(),
    )
    records = lines(run)
    failed = [r for r in records if "failed" in r and not r.get("aggregate")]
    assert len(failed) == 1 and "has 1 training image" in failed[0]["failed"]
    survivors = [r["examples"] for r in records if "client" in r]
    assert next(r for r in records if r.get("aggregate"))["clients"] == 2
    sizes = [len(p) for p in partition(Store(skewed_store).labels("train"), 3, "label-split", LOCAL.seed)]
    bound = SecAggSettings(max_weight=max(sizes)).error_bound(survivors)
    assert max_difference(read_checkpoint(skewed_run), read_checkpoint(run)) <= bound + 1e-6


def test_secure_aggregation_needs_two_hospitals(store: Path, tmp_path: Path) -> None:
    with pytest.raises(FedGANError, match="at least 2 hospitals"):
        federate(
            store, tmp_path / "x", clients=1, rounds=1, model_config=TINY, train_config=LOCAL, secagg=SecAggSettings()
        )


def test_report_of_a_federated_run_shows_hospitals_rounds_and_communication(label_split_run: Path) -> None:
    from fedgan.reporting.report import build_report

    page = build_report(label_split_run).read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert page.count("data:image/png;base64,") == 1 + 2  # loss curves + two round grids (round 1 small, round 2 final)
    assert (
        "federated (fedavg, 3 hospitals)" in page
        and "Images per grade per hospital" in page
        and "MB sent by hospitals" in page
    )
    assert "revealed to the coordinator: its image count (its weight); its images per grade; its mean losses" in page
    assert "Not evaluated yet" in page  # honest about what is missing
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched when opened


@pytest.mark.usefixtures("in_process")
def test_dp_federation_reports_each_hospitals_epsilon_and_continues_it_after_resume(
    store: Path, tmp_path: Path
) -> None:
    from fedgan.federation.recorder import read_ledger
    from fedgan.training.privacy import epsilon

    grouped = GANConfig(**{**TINY.__dict__, "norm": "group", "spectral_norm": False})  # what Opacus can train
    private = TrainConfig(epochs=1, batch_size=4, seed=2, sample_count=10, dp_epsilon=3.0, dp_delta=1e-3)
    run = federate(
        store, tmp_path / "dp", clients=2, partition_kind="iid", rounds=1, model_config=grouped, train_config=private
    )
    first = [r for r in lines(run) if "client" in r]
    assert all(
        r["epsilon"] == pytest.approx(3.0, abs=0.05) for r in first
    )  # each hospital calibrated its noise to the target
    resume_federation(run, rounds=2)
    records = lines(run)
    second = [r for r in records if "client" in r and r["round"] == 2]
    histories = read_ledger(run)
    assert sorted(histories) == ["0", "1"] and all(
        len(h) == 2 for h in histories.values()
    )  # both rounds, across the resume
    for r in second:
        assert r["epsilon"] == pytest.approx(epsilon([tuple(h) for h in histories[str(r["client"])]], 1e-3), abs=1e-3)
        assert r["epsilon"] > 3.0
    assert next(r for r in records if r.get("aggregate") and r["round"] == 2)["epsilon"] == max(
        r["epsilon"] for r in second
    )


@pytest.mark.usefixtures("in_process")
def test_client_level_dp_wraps_fedavg_and_accounts_each_round(store: Path, tmp_path: Path) -> None:
    from fedgan.federation.settings import ClientDP
    from fedgan.training.privacy import epsilon

    with pytest.raises(FedGANError, match="needs --weighting unweighted"):
        federate(
            store,
            tmp_path / "x",
            clients=2,
            rounds=1,
            model_config=TINY,
            train_config=LOCAL,
            client_dp=ClientDP(1.0, 1.0),
        )
    run = federate(
        store,
        tmp_path / "cdp",
        clients=2,
        partition_kind="iid",
        rounds=1,
        model_config=TINY,
        train_config=LOCAL,
        weighting="unweighted",
        client_dp=ClientDP(noise=2.0, clip=0.5),
    )
    aggregate = next(r for r in lines(run) if r.get("aggregate"))
    assert aggregate["clients"] == 2 and aggregate["client_epsilon"] == pytest.approx(
        epsilon([(2.0, 1.0, 1)], LOCAL.dp_delta), abs=1e-3
    )
    assert read_config(run)["config"]["client-dp"] == {"noise": 2.0, "clip": 0.5}
