"""What several test files share: the tiny model and training configs, and store preparation.

Fixtures live in conftest.py; plain values and functions live here, imported as `helpers`.
"""

from __future__ import annotations

from pathlib import Path

from fedgan.config import DiffusionConfig, GANConfig, TrainConfig

#: a 16 px model that trains in milliseconds: the federation tests' model
TINY = GANConfig(resolution=16, generator_width=32, discriminator_width=8, latent_dim=8)
CONDITIONAL = GANConfig(resolution=16, generator_width=32, discriminator_width=8, latent_dim=8, num_classes=5)
#: a 16 px UNet of two levels (about 60k parameters): a step and a 4-step DDIM sample in milliseconds
TINY_DDPM = DiffusionConfig(resolution=16, width=8, levels=2, timesteps=50, sample_steps=4)
#: one local epoch of batches of 4
LOCAL = TrainConfig(epochs=1, batch_size=4, seed=2, sample_count=10)


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


def max_difference(a: dict, b: dict, networks: tuple[str, ...] = ("generator", "discriminator")) -> float:
    """Largest absolute difference over the named networks' float tensors of two checkpoints: the
    one number that a secure-aggregation or resume test bounds."""
    return max(
        float((a[net][k].float() - b[net][k].float()).abs().max())
        for net in networks
        for k in a[net]
        if a[net][k].is_floating_point()
    )
