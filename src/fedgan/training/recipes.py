"""Named training recipes: the paper's, and the small-data default.

The defaults of `GANConfig` and `TrainConfig` *are* the small-data recipe, so there is one place
where each default is typed. A recipe other than the default is a set of overrides applied
before the user's own `--config` file and flags, which always win.

- `small-data` (default): what the small-data GAN literature measured to keep a discriminator
  from memorising a few hundred images: DiffAugment of real and fake images in both updates
  (Zhao et al. 2020), mirrored real images (StyleGAN's `--mirror`), a spectrally normalised
  discriminator without batch norm (Miyato et al. 2018), the hinge loss, two learning rates
  (TTUR: D 4e-4, G 1e-4) with Adam beta = (0, 0.99), and an EMA of the generator for sampling
  (Yazici et al. 2019). Each part was kept because `benchmarks/recipe_quality.py` measured it
  helping at equal time (docs/recipe.md); R1 and resize-convolution upsampling stay optional.
- `paper`: the paper's DCGAN exactly: BCE with a 0.9 real target, batch norm in both networks,
  Adam 2e-4 with beta1 = 0.5, no augmentation, no EMA.
- `graded`: small-data for a grade-conditional GAN (`--conditional`), and the demo's: the
  discriminator's grade head, weighted 3 in D's loss and 1 in G's, grades drawn evenly, and
  DiffAugment without cutout. Why: cutout blanks a quarter of every image D sees, and with it most
  of the few lesions that tell grade 2 from grade 0, so D's grade signal is mostly noise; on the
  2,000-image store it took the grade kappa of the samples from 0.11 to 0.42 at 1,500 steps and
  the structure KID to 0.50 at 4,500 (docs/recipe.md, "A recipe for grades"). G's weight is a
  third of D's because at 3 G drew grades as grainy caricatures and raised KID by half; at 1, on
  the demo's store over four seeds, KID stays level with small-data's (2.24 against 2.09) and the
  samples carry their grades (kappa 0.25-0.57 against chance) (docs/recipe.md, "The grade head's
  two weights").
- `ddpm`: the diffusion model's (`--model ddpm` chooses it): Adam 1e-3 with momentum, batches
  of 32, EMA, no augmentation.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from fedgan.config import TrainConfig
from fedgan.errors import FedGANError

if TYPE_CHECKING:  # torch stays out of `fedgan --help`, which lists the recipes
    from fedgan.config import ModelConfig

DEFAULT_RECIPE = "small-data"

#: recipe -> (GANConfig overrides, TrainConfig overrides); the default recipe overrides nothing
RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    DEFAULT_RECIPE: ({}, {}),
    "paper": (
        {"spectral_norm": False, "upsample": "transposed", "norm": "batch", "grade_norm": False, "grade_head": False},
        {
            "loss": "bce",
            "augment": "",
            "mirror": False,
            "ema_decay": 0.0,
            "r1_gamma": 0.0,
            "real_label": 0.9,
            "beta1": 0.5,
            "beta2": 0.999,
            "lr_generator": 2e-4,
            "lr_discriminator": 2e-4,
        },
    ),
    "graded": (
        {"grade_head": True},
        {"augment": "translation,color", "balance_grades": True, "grade_weight": 3.0, "generator_grade_weight": 1.0},
    ),
    # A DDPM regresses noise: no adversary, so no augmentation (the model would learn the augmented
    # images), Adam with momentum as in Ho et al. 2020, but 5x their 2e-4 and half the batch: at a
    # CPU's budget of a few hundred steps that took the demo store's KID from 508 to 8.6 in 150 s
    # (docs/diffusion.md).
    "ddpm": (
        {},
        {"augment": "", "beta1": 0.9, "beta2": 0.999, "lr_generator": 1e-3, "batch_size": 32, "ema_decay": 0.999},
    ),
}


def apply_recipe(name: str, model: ModelConfig, train: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """`model` and `train` with recipe `name`'s settings laid over them."""
    if name not in RECIPES:
        raise FedGANError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    model_overrides, train_overrides = RECIPES[name]
    return dataclasses.replace(model, **model_overrides), dataclasses.replace(train, **train_overrides)
