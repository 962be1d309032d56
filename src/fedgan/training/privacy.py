"""Sample-level differential privacy (DP-SGD) for the network that touches real images, with Opacus.

In a GAN only the discriminator touches real images; the generator learns from the discriminator's
verdicts alone, so it (and every image it makes) is post-processing of a DP discriminator and
inherits its guarantee. A DDPM's denoiser is trained on real images directly, so DP-SGD runs on
it, and its samples are post-processing of it; its UNet uses GroupNorm, which Opacus handles.

Each private update clips every sample's gradient to `dp_clip` and adds Gaussian noise of
`dp_noise x dp_clip` (Opacus's `DPOptimizer`, which becomes the state's optimiser of that
network, so the loop has no DP branch); the RDP accountant, hooked on the optimiser's step as
in Opacus's `PrivacyEngine`, turns the (noise, sampling rate, steps) history into ε at `dp_delta`.

Details that matter:
- a sample's gradient is the sum over its real image and the fake paired with it (one backward
  pass of both halves of the loss); clipping that pair bounds the real image's influence, so the
  guarantee holds per real image;
- per-sample hooks are switched off during the generator update, which back-propagates through
  the discriminator but must neither count as a private step nor leave per-sample gradients;
- batch norm mixes samples in a batch and is refused: DP needs `--norm group` (or none);
- Opacus cannot differentiate per sample through spectral normalisation's parametrisation, so
  the small-data recipe runs DP with `--no-spectral-norm --norm group`: DP-SGD's per-sample
  clipping already bounds how far one image moves the discriminator; augmentation, the hinge
  loss and the EMA of G all work unchanged;
- batches are shuffled, not Poisson-sampled; the accountant's sampling rate is batch/N, the
  usual approximation (Opacus makes the same one without Poisson sampling);
- the history is kept in every checkpoint, so ε continues across a resume.

Opacus is imported inside the functions that need it: it costs about two seconds, which every
run without DP (and every federated round's fresh client process) would otherwise pay.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import torch

from fedgan.config import DiffusionConfig, ModelConfig, TrainConfig
from fedgan.errors import FedGANError

if TYPE_CHECKING:
    from fedgan.training.diffusion import DiffusionState
    from fedgan.training.loop import GANState, TrainingState

History = list[tuple[float, float, int]]  # (noise multiplier, sampling rate, steps), the accountant's own form


def noise_for_target(config: TrainConfig, dataset_size: int, steps: int) -> float:
    """The noise multiplier that spends exactly `dp_epsilon` at `dp_delta` over `steps` updates."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=config.dp_epsilon,
            target_delta=config.dp_delta,
            sample_rate=sample_rate(config, dataset_size),
            steps=max(steps, 1),
            accountant="rdp",
        )
    )


def sample_rate(config: TrainConfig, dataset_size: int) -> float:
    return min(config.batch_size, dataset_size) / dataset_size


def epsilon(history: History, delta: float) -> float:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = list(history)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": the bound is valid, only not the tightest
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta)) if history else 0.0


class PrivateNetwork:
    """Opacus around one network (a GAN's discriminator, a DDPM's denoiser) and its optimiser for one
    training run (or one round)."""

    def __init__(
        self,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        noise: float,
        dataset_size: int,
        history: History | None = None,
    ) -> None:
        from opacus import GradSampleModule
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        # Harmless: PyTorch notes that a backward hook fires although the discriminator's input
        # (a real image) needs no gradient.
        warnings.filterwarnings(
            "ignore", message="Full backward hook is firing when gradients are computed with respect to module outputs"
        )
        problems = ModuleValidator.validate(network, strict=False)
        if problems:
            raise FedGANError(f"differential privacy cannot train this discriminator ({problems[0]}): use --norm group")
        self.noise = noise
        self.rate = sample_rate(config, dataset_size)
        self.delta = config.dp_delta
        # Opacus writes each summed per-sample gradient in NCHW order: a channels-last weight would get a
        # gradient of the other layout at every step (a copy, and PyTorch's warning about it)
        network.to(memory_format=torch.contiguous_format)
        self.hooks = GradSampleModule(network, loss_reduction="mean")  # hooks live on the network's layers
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=noise,
            max_grad_norm=config.dp_clip,
            expected_batch_size=min(config.batch_size, dataset_size),
            loss_reduction="mean",
        )
        self.accountant = RDPAccountant()
        self.accountant.history = list(history or [])
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(self.rate))  # as Opacus's PrivacyEngine

    @contextlib.contextmanager
    def hooks_off(self) -> Iterator[None]:
        """The generator's update: no per-sample gradients, no privacy step."""
        self.hooks.disable_hooks()
        try:
            yield
        finally:
            self.hooks.enable_hooks()

    def history(self) -> History:
        return [tuple(entry) for entry in self.accountant.history]  # type: ignore[misc]

    def epsilon(self) -> float:
        return epsilon(self.history(), self.delta)

    def close(self) -> None:
        """Remove the hooks: the network is a plain module again (for the next round's wrapper)."""
        self.hooks._close()


def check_private_model(model_config: ModelConfig, config: TrainConfig) -> None:
    """Refuse, with the fix, the settings that DP-SGD cannot train (a federation checks before its engine starts)."""
    if not config.private:
        return
    if isinstance(model_config, DiffusionConfig):
        return  # no R1 and no spectral norm in a DDPM; its UNet's GroupNorm is what DP-SGD needs
    if config.r1_gamma > 0:
        raise FedGANError(
            "differential privacy cannot run with the R1 penalty (Opacus has no per-sample double backward): set "
            "r1-gamma to 0"
        )
    if model_config.has_twin_head:
        raise FedGANError(
            "differential privacy cannot train a twin grade head (it runs on real images without taking a gradient "
            "there, which leaves Opacus without per-sample gradients): drop --twin-head (model: twin-head = false)"
        )
    if model_config.spectral_norm:
        raise FedGANError(
            "differential privacy cannot train a spectrally normalised discriminator (Opacus has no per-sample "
            'gradients through it): add --no-spectral-norm --norm group (model: spectral-norm = false, norm = "group")'
        )


def attach_privacy(
    state: TrainingState, config: TrainConfig, dataset_size: int, total_steps: int, saved: dict[str, Any] | None = None
) -> None:
    """Make `state`'s updates of the network that sees real images DP-SGD when `config` asks for it.

    `total_steps` is what the target epsilon is spread over; `saved` is a checkpoint's "privacy"
    entry, whose noise and history a resumed run continues with.
    """
    if not config.private:
        return
    check_private_model(state.model_config, config)
    if saved:
        noise, history = float(saved["noise"]), [tuple(h) for h in saved["history"]]
    else:
        noise, history = (config.dp_noise or noise_for_target(config, dataset_size, total_steps)), []
    if isinstance(state.model_config, DiffusionConfig):
        diffusion = cast("DiffusionState", state)
        diffusion.private = PrivateNetwork(
            diffusion.denoiser, diffusion.optimiser, config, noise, dataset_size, history
        )
        diffusion.optimiser = diffusion.private.optimizer  # the one optimiser the step uses, private now
        return
    gan = cast("GANState", state)
    gan.private = PrivateNetwork(gan.discriminator, gan.opt_discriminator, config, noise, dataset_size, history)
    gan.opt_discriminator = gan.private.optimizer  # the one optimiser the loop steps, private now
