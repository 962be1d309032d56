"""The local training loop, checkpoints, resume and transfer learning, on tiny real stores."""

from __future__ import annotations

import dataclasses
import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY

from fedgan import torchfile
from fedgan.config import GANConfig, PreprocessConfig, StoreConfig, TrainConfig
from fedgan.data.prepare import prepare_store
from fedgan.data.store import Store
from fedgan.errors import FedGANError
from fedgan.training.checkpoint import init_from_checkpoint, read_checkpoint, restore_state, save_checkpoint
from fedgan.training.data import InMemory
from fedgan.training.device import resolve_device
from fedgan.training.loop import new_state, train_epoch
from fedgan.training.run import resume_centralised, train_centralised

FAST = TrainConfig(epochs=3, batch_size=8, seed=4, sample_count=10)


@pytest.fixture(scope="module")
def fundus_store(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "fundus16"
    prepare_store(
        fundus_set,
        out,
        preprocess_config=PreprocessConfig(size=16),
        store_config=StoreConfig(seed=0),
        workers=1,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def ct_store(ct_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "ct16"
    prepare_store(
        ct_set,
        out,
        preprocess_config=PreprocessConfig(size=16),
        store_config=StoreConfig(heldout_fraction=0),
        workers=1,
        progress=False,
    )
    return out


def weights(state) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return {
        **{f"g.{k}": v for k, v in state.generator.state_dict().items()},
        **{f"d.{k}": v for k, v in state.discriminator.state_dict().items()},
    }


def test_a_step_changes_both_networks_and_reports_losses() -> None:
    state = new_state(TINY, FAST, torch.device("cpu"))
    before = {k: v.clone() for k, v in weights(state).items()}
    images = torch.rand(16, 1, 16, 16) * 2 - 1
    history = train_epoch(state, InMemory(images, torch.zeros(16, dtype=torch.long)), FAST)
    assert len(history) == 2 and state.step == 2 and state.epoch == 1
    assert all(s.finite() and 0 < s.d_real < 1 for s in history)
    changed = [k for k, v in weights(state).items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any(k.startswith("g.") for k in changed) and any(k.startswith("d.") for k in changed)


def test_run_folder_contents(fundus_store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_centralised(fundus_store, run, model_config=TINY, train_config=FAST, progress=False)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch-0001.png", "epoch-0002.png", "epoch-0003.png"]
    assert (run / "checkpoints" / "latest").resolve().name == "epoch-0003.pt"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, len(lines) + 1))
    assert {"d_loss", "g_loss", "d_real", "d_fake", "epoch", "images_per_s"} <= set(lines[0])
    data = read_checkpoint(run)
    assert data["epoch"] == 3 and data["model_config"]["resolution"] == 16 and data["train_config"]["seed"] == 4
    assert (
        set(data["rng"]) == {"noise", "augment", "torch", "cuda"} and "opt_generator" in data and data["fedgan_version"]
    )
    assert "[data.train]" in (run / "config.toml").read_text()


def test_tensorboard_mirrors_the_run_folder(fundus_store: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train_centralised(
        fundus_store,
        run,
        model_config=TINY,
        train_config=dataclasses.replace(FAST, epochs=2, tensorboard=True),
        progress=False,
    )
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in events.Scalars("train/d_loss")] == steps
    assert [e.step for e in events.Images("samples")] == [steps[len(steps) // 2 - 1], steps[-1]]  # one per epoch


def test_resume_equals_uninterrupted(fundus_store: Path, tmp_path: Path) -> None:
    straight = train_centralised(fundus_store, tmp_path / "a", model_config=TINY, train_config=FAST, progress=False)
    train_centralised(
        fundus_store, tmp_path / "b", model_config=TINY, train_config=FAST, progress=False, stop_after_epochs=1
    )
    torch.manual_seed(12345)  # whatever happened in between must not matter
    resumed = resume_centralised(tmp_path / "b", progress=False)
    assert resumed.epoch == straight.epoch == 3 and resumed.step == straight.step
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines_a = [json.loads(x)["g_loss"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lines_b = [json.loads(x)["g_loss"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert lines_a == lines_b


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    state = new_state(TINY, FAST, torch.device("cpu"))
    train_epoch(state, InMemory(torch.rand(16, 1, 16, 16) * 2 - 1, torch.zeros(16, dtype=torch.long)), FAST)
    save_checkpoint(state, FAST, tmp_path, "epoch-0001")
    restored, config = restore_state(read_checkpoint(tmp_path / "latest"), torch.device("cpu"))
    assert config == FAST and restored.step == state.step
    a, b = weights(state), weights(restored)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert restored.opt_generator.state_dict()["state"][0]["exp_avg"].equal(
        state.opt_generator.state_dict()["state"][0]["exp_avg"]
    )
    assert torch.equal(restored.noise.get_state(), state.noise.get_state())


def test_truncated_and_foreign_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    state = new_state(TINY, FAST, torch.device("cpu"))
    path = save_checkpoint(state, FAST, tmp_path, "epoch-0001")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FedGANError, match="truncated or corrupt") as info:
        read_checkpoint(cut)
    assert "\n" not in str(info.value)
    data = torch.load(path, weights_only=True)
    data["format_version"] = 99
    torch.save(data, tmp_path / "future.pt")
    with pytest.raises(FedGANError, match="format v99"):
        read_checkpoint(tmp_path / "future.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(FedGANError, match="not a FedGAN checkpoint"):
        read_checkpoint(tmp_path / "other.pt")

    def unreadable(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.MonkeyPatch.context() as patch:  # a disk error: every read of the file fails
        patch.setattr(torch, "load", unreadable)
        patch.setattr(torchfile, "open", unreadable, raising=False)
        with pytest.raises(FedGANError, match=r"epoch-0001.pt: not a readable checkpoint, .*Input/output error"):
            read_checkpoint(path)
    (tmp_path / "notes.pt").write_text("not a checkpoint at all\n")  # a wrong file given to --init or --resume
    with pytest.raises(FedGANError, match=r"notes.pt: not a readable checkpoint, truncated or corrupt \(not a torch"):
        read_checkpoint(tmp_path / "notes.pt")


def test_a_model_loaded_for_use_samples_like_the_training_state_and_leaves_the_rng_alone(tmp_path: Path) -> None:
    from fedgan.training.loop import generate
    from fedgan.training.trained import load_trained

    state = new_state(TINY, FAST, torch.device("cpu"))
    train_epoch(state, InMemory(torch.rand(16, 1, 16, 16) * 2 - 1, torch.zeros(16, dtype=torch.long)), FAST)
    save_checkpoint(state, FAST, tmp_path, "epoch-0001")
    before = torch.get_rng_state().clone()
    model = load_trained(tmp_path)
    assert torch.equal(torch.get_rng_state(), before)  # restore_state would have reseeded the whole process
    assert not hasattr(model, "opt_generator") and model.completed == state.epoch
    z = torch.randn(5, TINY.latent_dim, generator=torch.Generator().manual_seed(3))
    assert torch.equal(generate(model, z), generate(state, z))  # the moving average, in eval mode


def test_unreadable_latest_falls_back_to_the_previous_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = new_state(TINY, FAST, torch.device("cpu"))
    save_checkpoint(state, FAST, tmp_path, "round-0001", extra={"round": 1})
    newest = save_checkpoint(state, FAST, tmp_path, "round-0002", extra={"round": 2})
    newest.write_bytes(newest.read_bytes()[:1000])  # the last write lost by a crash
    assert read_checkpoint(tmp_path)["extra"]["round"] == 1
    assert "round-0002.pt: not a readable checkpoint" in caplog.text and "resuming from round-0001.pt" in caplog.text
    with pytest.raises(FedGANError, match="truncated or corrupt"):
        read_checkpoint(newest)  # a file named explicitly is that file or an error


def test_transfer_from_ct_pretraining(ct_store: Path, fundus_store: Path, tmp_path: Path) -> None:
    pretrained = train_centralised(
        ct_store, tmp_path / "ct", model_config=TINY, train_config=TrainConfig(epochs=1, batch_size=4), progress=False
    )
    fine = new_state(TINY, FAST, torch.device("cpu"))
    assert init_from_checkpoint(fine, tmp_path / "ct", FAST) == []
    a, b = weights(pretrained), weights(fine)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert fine.opt_generator.state_dict()["state"] == {}  # fresh optimisers
    conditional = new_state(GANConfig(**{**TINY.__dict__, "num_classes": 5}), FAST, torch.device("cpu"))
    assert init_from_checkpoint(conditional, tmp_path / "ct", FAST) == ["generator.embed", "discriminator.embed"]
    graded = new_state(
        GANConfig(**{**TINY.__dict__, "num_classes": 5, "grade_norm": True, "grade_head": True}),
        FAST,
        torch.device("cpu"),
    )
    fresh = ["generator.embed", "generator.grade_norms", "discriminator.embed", "discriminator.grade_head"]
    assert init_from_checkpoint(graded, tmp_path / "ct", FAST) == fresh
    run = train_centralised(
        fundus_store,
        tmp_path / "fundus",
        model_config=TINY,
        train_config=TrainConfig(epochs=1, batch_size=8),
        init=tmp_path / "ct" / "checkpoints" / "latest",
        progress=False,
    )
    assert run.epoch == 1
    assert "ct" in (tmp_path / "fundus" / "config.toml").read_text()


def test_a_grade_head_checkpoint_starts_a_twin_head_model_and_back(tmp_path: Path) -> None:
    """`--twin-head` runs may start from an AC-GAN (`graded`) run: the twin is the one new layer,
    everything else, the grade head included, is the source's. The other way the twin is dropped."""
    graded_config = GANConfig(**{**TINY.__dict__, "num_classes": 5, "grade_norm": True, "grade_head": True})
    twin_config = dataclasses.replace(graded_config, twin_head=True)
    graded = new_state(graded_config, FAST, torch.device("cpu"))
    save_checkpoint(graded, FAST, tmp_path / "graded", "latest", extra={})
    twin = new_state(twin_config, FAST, torch.device("cpu"))
    assert init_from_checkpoint(twin, tmp_path / "graded", FAST) == ["discriminator.twin_head"]
    theirs, ours = weights(graded), weights(twin)
    assert any(k.startswith("d.twin_head.") for k in ours) and not any(k.startswith("d.twin_head.") for k in theirs)
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)  # grade head, embeddings and norms included
    save_checkpoint(twin, FAST, tmp_path / "twin", "latest", extra={})
    back = new_state(graded_config, FAST, torch.device("cpu"))
    assert init_from_checkpoint(back, tmp_path / "twin", FAST) == []
    assert all(torch.equal(ours[k], v) for k, v in weights(back).items())


@pytest.mark.parametrize("change", [dict(latent_dim=32), dict(generator_width=128), dict(norm="group")])
def test_transfer_with_another_architecture_is_refused(ct_store: Path, tmp_path: Path, change: dict) -> None:
    train_centralised(
        ct_store, tmp_path / "ct", model_config=TINY, train_config=TrainConfig(epochs=1, batch_size=4), progress=False
    )
    other = new_state(GANConfig(**{**TINY.__dict__, **change}), FAST, torch.device("cpu"))
    before = {k: v.clone() for k, v in weights(other).items()}
    with pytest.raises(FedGANError, match="cannot initialise"):
        init_from_checkpoint(other, tmp_path / "ct", FAST)
    assert all(torch.equal(before[k], v) for k, v in weights(other).items())  # nothing half-loaded


def test_resolution_mismatch_from_the_store_is_refused(ct_set: Path, ct_store: Path, tmp_path: Path) -> None:
    train_centralised(
        ct_store, tmp_path / "ct", model_config=TINY, train_config=TrainConfig(epochs=1, batch_size=4), progress=False
    )
    prepare_store(
        ct_set,
        tmp_path / "ct32",
        preprocess_config=PreprocessConfig(size=32),
        store_config=StoreConfig(heldout_fraction=0),
        workers=1,
        progress=False,
    )
    with pytest.raises(FedGANError, match="resolution is 16, this run needs 32"):
        train_centralised(
            tmp_path / "ct32",
            tmp_path / "r",
            model_config=TINY,
            train_config=FAST,
            init=tmp_path / "ct",
            progress=False,
        )


def test_device_choice() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(FedGANError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(FedGANError):
        resolve_device("tpu")


def test_train_and_resume_from_the_command_line(fundus_store: Path, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "fedgan", "train", "-q"]
    tiny = [
        "--generator-width",
        "64",
        "--discriminator-width",
        "8",
        "--latent-dim",
        "16",
        "--batch-size",
        "8",
        "--device",
        "cpu",
    ]
    result = subprocess.run(
        [*base, "--store", str(fundus_store), "--out", str(tmp_path / "r"), "--epochs", "1", "--conditional", *tiny],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "trained to epoch 1" in result.stdout
    result = subprocess.run([*base, "--resume", str(tmp_path / "r"), "--epochs", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "trained to epoch 2" in result.stdout
    again = subprocess.run(
        [*base, "--store", str(fundus_store), "--out", str(tmp_path / "r"), *tiny], capture_output=True, text=True
    )
    assert again.returncode == 1 and "--resume" in again.stderr


GROUPED = GANConfig(
    resolution=16, generator_width=32, discriminator_width=8, latent_dim=8, norm="group", spectral_norm=False
)


def test_dp_training_spends_the_target_epsilon_by_opacus_accounting_and_resumes_with_it(
    tmp_path: Path, fundus_store: Path
) -> None:
    from opacus.accountants import RDPAccountant

    from fedgan.training.privacy import epsilon

    config = TrainConfig(epochs=2, batch_size=4, dp_epsilon=4.0, dp_delta=1e-3)
    straight = train_centralised(
        fundus_store, tmp_path / "a", model_config=GROUPED, train_config=config, progress=False
    )
    images = len(Store(fundus_store).labels("train"))
    steps = 2 * (images // 4)
    assert straight.private.history() == [
        (straight.private.noise, 4 / images, steps)
    ]  # every D update counted, nothing else
    reference = RDPAccountant()  # Opacus's own accountant, stepped once per update
    for _ in range(steps):
        reference.step(noise_multiplier=straight.private.noise, sample_rate=4 / images)
    assert straight.private.epsilon() == pytest.approx(reference.get_epsilon(1e-3), rel=1e-9)
    assert straight.private.epsilon() == pytest.approx(4.0, abs=0.05)  # the noise was calibrated to the target
    lines = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert (
        lines[-1]["epsilon"] == pytest.approx(straight.private.epsilon(), abs=1e-3)
        and lines[0]["epsilon"] < lines[-1]["epsilon"]
    )

    train_centralised(
        fundus_store, tmp_path / "b", model_config=GROUPED, train_config=config, progress=False, stop_after_epochs=1
    )
    resumed = resume_centralised(tmp_path / "b", progress=False)
    assert resumed.private.history() == straight.private.history()
    assert epsilon(resumed.private.history(), 1e-3) == straight.private.epsilon()


def test_dp_refuses_batch_norm_with_a_clear_error(tmp_path: Path, fundus_store: Path) -> None:
    with pytest.raises(FedGANError, match="use --norm group"):
        train_centralised(
            fundus_store,
            tmp_path / "r",
            model_config=GANConfig(
                resolution=16, generator_width=32, discriminator_width=8, latent_dim=8, spectral_norm=False
            ),
            train_config=TrainConfig(epochs=1, batch_size=4, dp_noise=1.0),
            progress=False,
        )
