"""The DCGAN generator and discriminator; `GANConfig` is the single definition of their shape."""

from fedgan.config import GANConfig
from fedgan.models.dcgan import Discriminator, Generator, build_models

__all__ = ["Discriminator", "GANConfig", "Generator", "build_models"]
