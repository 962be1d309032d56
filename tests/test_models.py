"""Generator and discriminator: shapes, ranges, conditioning, normalisation choices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedgan.config import GANConfig
from fedgan.errors import FedGANError
from fedgan.models.dcgan import build_models, parameter_count

TINY = dict(generator_width=64, discriminator_width=8, latent_dim=16)


def test_paper_shapes_and_sizes() -> None:
    generator, discriminator = build_models(GANConfig())
    assert parameter_count(generator) == pytest.approx(14.5e6, rel=0.01)
    assert parameter_count(discriminator) == pytest.approx(11.2e6, rel=0.01)
    assert [m.out_channels for m in generator.upsample if isinstance(m, nn.ConvTranspose2d)] == [512, 256, 128, 64, 32]
    assert [m.out_channels for m in discriminator.features if isinstance(m, nn.Conv2d)] == [64, 128, 256, 512, 1024]


@pytest.mark.parametrize("resolution", [16, 64, 256])
@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_output_shapes_and_ranges(resolution: int, norm: str) -> None:
    config = GANConfig(resolution=resolution, norm=norm, **TINY)
    generator, discriminator = build_models(config)
    images = generator(torch.randn(3, 16) * 5)
    assert images.shape == (3, 1, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    assert discriminator(images).shape == (3,)


def test_conditional_networks_use_the_grade() -> None:
    config = GANConfig(resolution=32, num_classes=5, **TINY)
    generator, discriminator = build_models(config)
    generator.eval(), discriminator.eval()
    z = torch.randn(1, 16).repeat(5, 1)
    grades = torch.arange(5)
    images = generator(z, grades)
    assert all(not torch.allclose(images[0], images[g]) for g in range(1, 5))
    logits = discriminator(images[:1].repeat(5, 1, 1, 1), grades)
    assert len(set(logits.round(decimals=5).tolist())) == 5
    with pytest.raises(ValueError, match="grade"):
        generator(z)


def test_grade_norms_start_as_the_unconditioned_twin_and_act_after_every_block() -> None:
    torch.manual_seed(0)
    plain = GANConfig(resolution=32, num_classes=5, **TINY)
    twin, _ = build_models(plain)
    torch.manual_seed(0)
    generator, _ = build_models(GANConfig(**{**plain.__dict__, "grade_norm": True}))
    norms = [m for m in generator.upsample if isinstance(m, nn.BatchNorm2d)]
    assert [a.gain.num_embeddings for a in generator.grade_norms.values()] == [5] * len(norms) == [5, 5, 5]
    assert [a.gain.embedding_dim for a in generator.grade_norms.values()] == [m.num_features for m in norms]
    twin.eval(), generator.eval()
    z, grades = torch.randn(5, 16), torch.arange(5)
    assert torch.equal(generator(z, grades), twin(z, grades))  # zero gains and biases: the same function
    with torch.no_grad():
        list(generator.grade_norms.values())[-1].bias.weight[4] += 0.5  # grade 4, last block only
    changed = (generator(z, grades) != twin(z, grades)).flatten(1).any(dim=1)
    assert changed.tolist() == [False, False, False, False, True]


def test_no_inplace_activations_or_batchnorm_when_not_asked() -> None:
    generator, discriminator = build_models(GANConfig(resolution=32, norm="group", **TINY))
    for module in [*generator.modules(), *discriminator.modules()]:
        assert not getattr(module, "inplace", False), module
        assert not isinstance(module, nn.modules.batchnorm._BatchNorm)


@pytest.mark.parametrize(
    "bad", [dict(resolution=100), dict(resolution=8), dict(norm="layer"), dict(generator_width=8, resolution=256)]
)
def test_bad_configs_are_clear_errors(bad: dict) -> None:
    with pytest.raises(FedGANError):
        GANConfig(**{**TINY, **bad})


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_channels_last_networks_compute_what_their_nchw_twins_do(spectral_norm: bool) -> None:
    """The layout is a speed choice (`dcgan.CHANNELS_LAST`), never a change of function: the
    discriminator flattens its last features in (channel, row, column) order either way, and an
    NCHW network's state dict loads into a channels-last one."""
    config = GANConfig(resolution=32, num_classes=5, spectral_norm=spectral_norm, norm="group", **TINY)
    generator, discriminator = build_models(config)
    kernels = [p for network in (generator, discriminator) for p in network.parameters() if p.dim() == 4]
    assert len(kernels) == 7 and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    twins = [network.to(memory_format=torch.contiguous_format) for network in build_models(config)]
    for twin, network in zip(twins, (generator, discriminator), strict=True):
        twin.load_state_dict(network.state_dict())
        twin.eval(), network.eval()
    z, grades = torch.randn(4, 16), torch.arange(4)
    images = generator(z, grades)
    assert torch.allclose(images, twins[0](z, grades), atol=1e-5)
    assert torch.allclose(discriminator(images, grades), twins[1](images.contiguous(), grades), atol=1e-5)
    assert not discriminator(images, grades).equal(discriminator(images.flip(-1), grades))  # not a trivial match
