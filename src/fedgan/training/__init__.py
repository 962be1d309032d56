"""The local GAN training loop and checkpoints. Never imports Flower: each hospital runs this code."""
