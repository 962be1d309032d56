"""A fresh training state for either kind of model: the one place that chooses by kind.

Run folders, checkpoints and the federation build states here, so they serve the GAN and the
DDPM alike; everything after construction goes through `loop.TrainingState`.
"""

from __future__ import annotations

import torch

from fedgan.config import DiffusionConfig, ModelConfig, TrainConfig
from fedgan.training.diffusion import new_diffusion_state
from fedgan.training.loop import TrainingState, new_state


def new_model_state(model_config: ModelConfig, train_config: TrainConfig, device: torch.device) -> TrainingState:
    """Fresh networks (GAN or DDPM, by the config's type) whose initial weights depend only on the seed."""
    if isinstance(model_config, DiffusionConfig):
        return new_diffusion_state(model_config, train_config, device)
    return new_state(model_config, train_config, device)
