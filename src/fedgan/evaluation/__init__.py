"""Judging images and models with fixed, independent tools (never a GAN's own discriminator)."""
