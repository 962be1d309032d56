"""The DDPM (`--model ddpm`): trains, resumes exactly, samples the grade it is asked for, and goes
through the same checkpoints, sampling, evaluation and audit as the GAN."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, TINY_DDPM, max_difference, small_store

from fedgan.config import DiffusionConfig, TrainConfig
from fedgan.errors import FedGANError
from fedgan.models.ddpm import Denoiser
from fedgan.training.checkpoint import init_from_checkpoint, read_checkpoint
from fedgan.training.diffusion import DiffusionState, new_diffusion_state
from fedgan.training.loop import generate, new_state
from fedgan.training.recipes import apply_recipe
from fedgan.training.run import resume_centralised, train_centralised
from fedgan.training.trained import load_trained

_, RECIPE = apply_recipe("ddpm", TINY_DDPM, TrainConfig(epochs=2, seed=3, sample_count=10))
FAST = dataclasses.replace(RECIPE, batch_size=8)  # 24 training images: three steps an epoch


@pytest.fixture(scope="module")
def fundus_store(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 training images; 16 held out, enough for the fixed evaluator."""
    return small_store(fundus_set, tmp_path_factory.mktemp("stores") / "fundus16", size=16, heldout=0.4)


def denoiser_weights(state: DiffusionState) -> dict[str, torch.Tensor]:
    return {**state.denoiser.state_dict(), **{f"ema.{k}": v for k, v in state.generator_ema.state_dict().items()}}


def test_a_step_lowers_the_denoising_loss_on_a_fixed_batch() -> None:
    quick = TrainConfig(**{**FAST.__dict__, "lr_generator": 2e-3})
    state = new_diffusion_state(TINY_DDPM, quick, torch.device("cpu"))
    images = torch.linspace(-1, 1, 16).repeat(8, 1, 16, 1)  # one smooth gradient image, eight times
    losses = [state.train_step(images, None, quick).g_loss for _ in range(40)]
    assert state.step == 40 and np.mean(losses[-8:]) < 0.6 * np.mean(losses[:8])


def test_resume_equals_uninterrupted(fundus_store: Path, tmp_path: Path) -> None:
    config = {"model_config": TINY_DDPM, "train_config": FAST, "conditional": True, "progress": False}
    straight = train_centralised(fundus_store, tmp_path / "a", **config)
    train_centralised(fundus_store, tmp_path / "b", **config, stop_after_epochs=1)
    torch.manual_seed(999)  # whatever happened in between must not matter
    resumed = resume_centralised(tmp_path / "b", progress=False)
    assert isinstance(resumed, DiffusionState) and resumed.step == straight.step == 2 * (24 // 8)
    a, b = denoiser_weights(straight), denoiser_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [
        [json.loads(x)["g_loss"] for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in "ab"
    ]
    assert losses[0] == losses[1]
    assert (tmp_path / "a" / "samples" / "epoch-0002.png").exists()


def test_sampling_follows_the_requested_grade_and_the_noise() -> None:
    """Grade embeddings set apart (as training sets them apart) must change the image, and the same
    noise must give the same image: DDIM with eta 0 is deterministic."""
    config = DiffusionConfig(resolution=16, width=8, levels=2, timesteps=50, sample_steps=4, num_classes=5)
    denoiser = Denoiser(config).eval()
    with torch.no_grad():
        denoiser.unet.class_embedding.weight.copy_(torch.eye(6, 32) * 50)
    z = torch.randn(4, config.latent_dim, generator=torch.Generator().manual_seed(0)).repeat(2, 1)
    grades = torch.tensor([0, 0, 0, 0, 4, 4, 4, 4])
    with torch.no_grad():
        images = denoiser(z, grades)
        again = denoiser(z, grades)
    assert images.shape == (8, 1, 16, 16) and images.abs().max() <= 1
    assert torch.equal(images, again)
    assert (images[:4] - images[4:]).abs().mean() > 0.05


def test_guidance_mixes_the_conditional_and_unconditional_predictions() -> None:
    config = DiffusionConfig(resolution=16, width=8, levels=2, timesteps=50, sample_steps=3, num_classes=5)
    z = torch.randn(2, config.latent_dim, generator=torch.Generator().manual_seed(1))
    grades = torch.tensor([1, 3])
    torch.manual_seed(0)
    plain = Denoiser(config).eval()
    guided = Denoiser(DiffusionConfig(**{**config.__dict__, "guidance": 3.0})).eval()
    guided.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert not torch.equal(plain(z, grades), guided(z, grades))


def test_a_checkpoint_loads_for_use_and_samples_like_the_training_state(fundus_store: Path, tmp_path: Path) -> None:
    state = train_centralised(
        fundus_store, tmp_path / "run", model_config=TINY_DDPM, train_config=FAST, conditional=True, progress=False
    )
    assert read_checkpoint(tmp_path / "run")["model_config"]["kind"] == "ddpm"
    trained = load_trained(tmp_path / "run")
    z = torch.randn(3, TINY_DDPM.latent_dim, generator=torch.Generator().manual_seed(5))
    grades = torch.tensor([0, 2, 4])
    assert torch.equal(generate(state, z, grades), generate(trained, z, grades))
    with pytest.raises(FedGANError, match="diffusion model has no discriminator"):
        trained.judge(tmp_path / "run", "the paper's realism score")


def test_pretraining_transfers_into_a_conditional_ddpm_but_not_into_a_gan(fundus_store: Path, tmp_path: Path) -> None:
    train_centralised(fundus_store, tmp_path / "ct", model_config=TINY_DDPM, train_config=FAST, progress=False)
    conditional = DiffusionConfig(**{**TINY_DDPM.__dict__, "num_classes": 5})
    state = new_diffusion_state(conditional, FAST, torch.device("cpu"))
    assert init_from_checkpoint(state, tmp_path / "ct", FAST) == ["denoiser.unet.class_embedding"]
    source = read_checkpoint(tmp_path / "ct")["denoiser"]
    assert torch.equal(state.denoiser.state_dict()["unet.conv_in.weight"], source["unet.conv_in.weight"])

    with pytest.raises(FedGANError, match="cannot initialise a gan from this checkpoint of a ddpm"):
        init_from_checkpoint(new_state(TINY, FAST, torch.device("cpu")), tmp_path / "ct", FAST)


def test_dp_sgd_on_the_unet_spends_its_epsilon_and_resumes_with_it(fundus_store: Path, tmp_path: Path) -> None:
    """Opacus trains the UNet (GroupNorm) with per-sample clipping; epsilon continues across a resume."""
    private = TrainConfig(**{**FAST.__dict__, "dp_epsilon": 8.0, "dp_delta": 1e-3})
    config = {"model_config": TINY_DDPM, "train_config": private, "progress": False}
    straight = train_centralised(fundus_store, tmp_path / "a", **config)
    train_centralised(fundus_store, tmp_path / "b", **config, stop_after_epochs=1)
    resumed = resume_centralised(tmp_path / "b", progress=False)
    assert straight.private is not None and straight.private.epsilon() == pytest.approx(8.0, rel=0.05)
    assert resumed.private.epsilon() == pytest.approx(straight.private.epsilon())
    a, b = denoiser_weights(straight), denoiser_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.usefixtures("in_process")
def test_a_ddpm_federates_for_two_rounds_resumes_and_aggregates_securely(fundus_store: Path, tmp_path: Path) -> None:
    """FedAvg over the UNet (and its moving average): each round's global denoiser is the mean of
    the hospitals', the run folder is a federation's, a resumed run ends where a straight one does,
    and SecAgg+'s unmasked sum gives the plain round's denoiser up to one quantisation step per hospital."""
    from fedgan.data.partition import partition
    from fedgan.data.store import Store
    from fedgan.federation.settings import SecAggSettings
    from fedgan.federation.simulate import federate, resume_federation

    local = TrainConfig(**{**FAST.__dict__, "epochs": 1, "batch_size": 4})
    settings = {"clients": 2, "partition_kind": "label-split", "model_config": TINY_DDPM, "train_config": local}
    straight = federate(fundus_store, tmp_path / "a", rounds=2, conditional=True, **settings)
    stopped = federate(fundus_store, tmp_path / "b", rounds=1, conditional=True, **settings)
    plain = read_checkpoint(stopped)
    secure = read_checkpoint(
        federate(fundus_store, tmp_path / "s", rounds=1, conditional=True, secagg=SecAggSettings(), **settings)
    )
    sizes = [len(p) for p in partition(Store(fundus_store).labels("train"), 2, "label-split", local.seed)]
    difference = max_difference(plain, secure, networks=("denoiser", "generator_ema"))
    assert 0 < difference <= SecAggSettings(max_weight=max(sizes)).error_bound(sizes) + 1e-6
    resume_federation(stopped, rounds=2)
    a, b = read_checkpoint(straight), read_checkpoint(stopped)
    assert a["model_config"]["kind"] == "ddpm" and b["extra"]["round"] == 2
    for key, value in a["denoiser"].items():  # same up to the summation order of the average
        assert torch.allclose(value, b["denoiser"][key], atol=1e-5), key
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["round"], r["client"]) for r in records if "client" in r) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(r["d_loss"] == 0 and 0 < r["g_loss"] < 2 for r in records if "client" in r)
    assert (straight / "samples" / "round-0002.png").exists()
    with pytest.raises(FedGANError, match="a DDPM has no discriminator"):
        from fedgan.config import AlgorithmConfig

        federate(fundus_store, tmp_path / "c", rounds=1, algorithm=AlgorithmConfig("mdgan"), **settings)


def test_sample_evaluate_and_audit_a_ddpm_from_the_command_line(
    fundus_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedgan.cli import main

    run = tmp_path / "run"
    assert main(["train", "--store", str(fundus_store), "--out", str(run), "--model", "ddpm", "--conditional",
                 "--epochs", "1", "--width", "8", "--levels", "2", "--timesteps", "50", "--sample-steps", "4",
                 "--quiet"]) == 0  # fmt: skip
    assert main(["sample", str(run), "--model", "ddpm", "--count", "12", "--out", str(tmp_path / "synth"), "-q"]) == 0
    rows = (tmp_path / "synth" / "trainLabels.csv").read_text().splitlines()
    assert (
        rows[0] == "image,level" and len(rows) == 13 and len(list((tmp_path / "synth" / "train").glob("*.png"))) == 12
    )
    assert main(["sample", str(run), "--model", "gan", "--count", "2", "--out", str(tmp_path / "other")]) == 1
    assert "run: holds a ddpm, not a gan (--model)" in capsys.readouterr().err and not (tmp_path / "other").exists()
    from fedgan.evaluation.evaluate import evaluate_run
    from fedgan.evaluation.privacy import DENOISING, audit

    result = evaluate_run(run, fundus_store, count=20, draws=2)
    assert result["intervals"]["draws"] == 2 and result["fidelity"]["kid"]["value"] > 0
    assert "kappa" in result["utility"]["synthetic_trained"]  # the DDPM's images carry the grades they were asked for
    privacy = audit(run, fundus_store, Path(f"{fundus_store}:heldout"), samples=20)
    assert DENOISING in privacy and "logan" not in privacy and 0 <= privacy[DENOISING]["auc"]["value"] <= 1


def test_ddpm_flags_and_recipes_belong_to_their_model() -> None:
    from fedgan.cli import build_parser
    from fedgan.commands.common import model_configs

    parse = build_parser().parse_args
    model, train = model_configs(parse(["train", "--model", "ddpm", "--guidance", "2", "--batch-size", "16"]))
    assert isinstance(model, DiffusionConfig) and model.guidance == 2 and train.batch_size == 16
    assert train.lr_generator == RECIPE.lr_generator and train.augment == ""  # the ddpm recipe, then the flags
    with pytest.raises(FedGANError, match="--guidance is a ddpm setting; --model is gan"):
        model_configs(parse(["train", "--guidance", "2"]))
    with pytest.raises(FedGANError, match="--recipe paper is for the gan; --model is ddpm"):
        model_configs(parse(["train", "--model", "ddpm", "--recipe", "paper"]))
    sweep = parse(
        ["sweep", "--store", "s", "--out", "o", "--model", "gan,ddpm", "--guidance", "2", "--recipe", "paper"]
    )
    (gan, gan_train), (ddpm, _) = (model_configs(sweep, kind=kind) for kind in ("gan", "ddpm"))
    assert not gan.spectral_norm and gan_train.loss == "bce" and ddpm.guidance == 2  # each flag to its own kind
