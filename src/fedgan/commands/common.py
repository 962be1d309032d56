"""What several commands share: the help layout, common flags, the GAN and algorithm options."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from fedgan.config import (
    AGGREGATIONS,
    ALGORITHMS,
    AUGMENTATIONS,
    FEDERATION,
    JUDGES,
    LOSSES,
    MODELS,
    NORMS,
    PARTITIONS,
    PREDICTIONS,
    UPSAMPLES,
    WIRES,
    AlgorithmConfig,
    DiffusionConfig,
    GANConfig,
    TrainConfig,
)
from fedgan.training.recipes import DEFAULT_RECIPE, RECIPES, apply_recipe

# The defaults --help shows are the dataclasses' own (which are the default recipe's), never typed here.
MODEL, TRAIN, DIFFUSION = GANConfig(), TrainConfig(), DiffusionConfig()
PAPER_MODEL, PAPER_TRAIN = apply_recipe("paper", MODEL, TRAIN)
_, DDPM_TRAIN = apply_recipe("ddpm", DIFFUSION, TRAIN)


def shown(value: Any) -> str:
    """A default as --help prints it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return str(value) if value != "" else "none"


def with_default(text: str, value: Any, paper: Any = None) -> str:
    """`text (default: value)`, and the paper recipe's value where it differs."""
    differs = paper is not None and paper != value
    return f"{text} (default: {shown(value)}{f'; paper recipe: {shown(paper)}' if differs else ''})"


def add_switch(group: Any, flag: str, help_text: str) -> None:
    """--flag / --no-flag; None when not given, so the recipe's or --config's value stands."""
    group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)


def add_partition_options(group: Any, *, alpha: bool = True) -> None:
    """--partition (and --alpha): how a store's training split is divided among hospitals."""
    group.add_argument(
        "--partition",
        default=FEDERATION.partition,
        choices=PARTITIONS,
        help=with_default("how the training split is divided among hospitals", FEDERATION.partition),
    )
    if alpha:
        group.add_argument(
            "--alpha",
            type=float,
            default=FEDERATION.alpha,
            help=with_default("Dirichlet concentration (--partition dirichlet)", FEDERATION.alpha),
        )


def train_help(text: str, name: str) -> str:
    return with_default(text, getattr(TRAIN, name), getattr(PAPER_TRAIN, name))


def diffusion_help(text: str, name: str) -> str:
    """Help for a DDPM setting, with its default from `DiffusionConfig`."""
    return with_default(text, getattr(DIFFUSION, name))


def model_help(text: str, name: str) -> str:
    return with_default(text, getattr(MODEL, name), getattr(PAPER_MODEL, name))


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_common(parser: argparse.ArgumentParser, *, seed: bool = True, workers: bool = False) -> None:
    if seed:
        parser.add_argument(
            "--seed", type=int, default=0, help="random seed; the same seed gives the same output (default: 0)"
        )
    if workers:
        parser.add_argument(
            "--workers", type=int, default=None, help="worker processes (default: one per available core)"
        )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_model_check(parser: argparse.ArgumentParser) -> None:
    """--model on commands that read a trained model: its kind comes from the checkpoint; the flag only checks it."""
    parser.add_argument(
        "--model",
        choices=MODELS,
        help="the kind of model RUN must hold, gan or ddpm (default: whichever it holds; the checkpoint says)",
    )


def check_model(run: Path, expected: str | None) -> None:
    """A one-line error when RUN holds another kind of model than `--model` names."""
    if expected is None:
        return
    from fedgan.config import model_from_record
    from fedgan.errors import FedGANError
    from fedgan.training.checkpoint import read_checkpoint
    from fedgan.training.release import read_release

    kind = model_from_record((read_release(run) or read_checkpoint(run))["model_config"]).kind
    if kind != expected:
        raise FedGANError(f"{run}: holds a {kind}, not a {expected} (--model)")


def command(sub: Any, name: str, help_text: str, description: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text,
        description=textwrap.dedent(description).strip(),
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=formatter,
    )


def add_algorithm_options(parser: argparse.ArgumentParser) -> None:
    """How hospitals are combined (`federate`; `sweep` takes a list of algorithms instead of --algorithm)."""
    defaults = AlgorithmConfig()
    group = parser.add_argument_group("algorithm (see docs/federation.md)")
    if parser.prog.endswith("federate"):
        group.add_argument(
            "--algorithm",
            default=defaults.name,
            choices=ALGORITHMS,
            help=with_default(
                "fedavg (the paper's); fedavgm/fedadam/fedyogi: Flower's server optimisers; fedprox: proximal "
                "local training; mdgan: the generator at the server, a discriminator per hospital that never leaves it",
                defaults.name,
            ),
        )
    group.add_argument(
        "--server-lr",
        type=float,
        default=defaults.server_lr,
        help=with_default(
            "server step size of fedavgm/fedadam/fedyogi; 0: the algorithm's default, 1.0 or 3e-3", defaults.server_lr
        ),
    )
    group.add_argument(
        "--server-momentum",
        type=float,
        default=defaults.server_momentum,
        help=with_default("fedavgm's momentum, fedadam/fedyogi's beta1", defaults.server_momentum),
    )
    group.add_argument(
        "--proximal-mu",
        type=float,
        default=defaults.proximal_mu,
        help=with_default("fedprox: weight of the proximal term", defaults.proximal_mu),
    )
    group.add_argument(
        "--pack",
        type=int,
        default=defaults.pack,
        help=with_default("mdgan: generator steps whose images travel in one message exchange", defaults.pack),
    )
    group.add_argument(
        "--judges",
        default=defaults.judges,
        choices=JUDGES,
        help=with_default(
            "mdgan: who judges each generated image: all hospitals holding its grade (weighted by their share of "
            "it), or one of them drawn by that share (the same gradient on average, each image judged once: "
            "measured 0.75-0.85x the time at ten hospitals, with an equal or worse KID; docs/federation.md)",
            defaults.judges,
        ),
    )
    group.add_argument(
        "--aggregation",
        default=defaults.aggregation,
        choices=AGGREGATIONS,
        help=with_default(
            "fedavg: how replies combine; median, trimmed-mean (20 %% of each tail) and krum resist hostile "
            "updates small enough to pass the norm bound, and move an all-honest federation's model a little "
            "(docs/federation.md)",
            defaults.aggregation,
        ),
    )
    group.add_argument(
        "--byzantine",
        type=int,
        default=defaults.byzantine,
        help=with_default("krum: how many hospitals may be hostile", defaults.byzantine),
    )
    group.add_argument(
        "--wire",
        default=defaults.wire,
        choices=WIRES,
        help=with_default(
            "how each hospital's model travels back: fp32 weights, or its update in fp16 (half the bytes; "
            "not with --secagg or mdgan)",
            defaults.wire,
        ),
    )


def algorithm_config(args: argparse.Namespace, name: str) -> AlgorithmConfig:
    """The algorithm `name` with the flags' settings (a robust --aggregation applies to fedavg only)."""
    return AlgorithmConfig(
        name,
        args.server_lr,
        args.server_momentum,
        args.proximal_mu,
        args.pack,
        args.aggregation if name == "fedavg" else "mean",
        args.byzantine,
        args.wire if name != "mdgan" else "fp32",
        args.judges,
    )


def add_model_options(parser: argparse.ArgumentParser, *, epochs_help: str, several: bool = False) -> None:
    """Model and local-training flags shared by `train`, `federate` and `sweep` (same loop, same models);
    `several`: --model takes a comma-separated list (the sweep compares kinds)."""
    parser.add_argument("--config", type=Path, help="TOML file with [model] and [train] tables")
    kinds = "gan: the paper's DCGAN (default); ddpm: a denoising diffusion model (a small UNet, DDIM sampling)"
    if several:
        parser.add_argument("--model", default="gan", type=model_list, help=f"comma-separated kinds: {kinds}")
    else:
        parser.add_argument("--model", choices=MODELS, default="gan", help=kinds)
    parser.add_argument(
        "--conditional", action="store_true", help="condition the model (both GAN networks) on the DR grade (0-4)"
    )
    parser.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        help=f"small-data (the GAN's default): DiffAugment, spectrally normalised D, hinge loss, EMA of G; paper: the "
        f"paper's DCGAN exactly; ddpm (the DDPM's default): Adam {DDPM_TRAIN.lr_generator:g} with beta1 "
        f"{DDPM_TRAIN.beta1:g}, EMA, no augmentation; graded (with --conditional): small-data with D's grade head "
        "weighted 3, grades drawn evenly and no cutout, which would hide the lesions that carry the grade. Applied "
        "before --config and the flags below, which override it",
    )
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, help=epochs_help)
    group.add_argument("--batch-size", type=int, help=train_help("images per step", "batch_size"))
    group.add_argument(
        "--lr-generator",
        type=float,
        help=train_help("Adam learning rate of G (of the UNet, --model ddpm)", "lr_generator"),
    )
    group.add_argument("--lr-discriminator", type=float, help=train_help("Adam learning rate of D", "lr_discriminator"))
    group.add_argument(
        "--real-label",
        type=float,
        help=train_help("BCE target for real images; 0.9 is one-sided smoothing", "real_label"),
    )
    group.add_argument("--d-steps", type=int, help=train_help("discriminator updates per generator update", "d_steps"))
    group.add_argument("--loss", choices=LOSSES, help=train_help("hinge or bce (the paper's)", "loss"))
    group.add_argument(
        "--augment",
        help=train_help(f"DiffAugment policy, comma-separated from {','.join(AUGMENTATIONS)}; '' for none", "augment"),
    )
    add_switch(
        group, "--mirror", train_help("mirror half of the real images; a mirrored left eye is a right eye", "mirror")
    )
    group.add_argument(
        "--ema-decay",
        type=float,
        help=train_help("moving average of G used for samples and evaluation; 0 disables", "ema_decay"),
    )
    group.add_argument(
        "--r1-gamma", type=float, help=train_help("R1 penalty weight on real images; 0 disables", "r1_gamma")
    )
    add_switch(
        group,
        "--balance-grades",
        train_help("draw training images with every grade equally likely (needs them in memory)", "balance_grades"),
    )
    group.add_argument(
        "--grade-weight",
        type=float,
        help=train_help("with --grade-head: weight of its cross-entropy on real images in D's loss", "grade_weight"),
    )
    group.add_argument(
        "--generator-grade-weight",
        type=float,
        help=train_help(
            "with --grade-head: weight of the head's cross-entropy on fakes in G's loss", "generator_grade_weight"
        ),
    )
    group.add_argument(
        "--eval-every",
        type=int,
        help=train_help(
            "steps between KID/FD evaluations on the store's fixed evaluator (train), or any value > 0 for one per "
            "round (federate); keeps checkpoints/best; 0 disables",
            "eval_every",
        ),
    )
    group.add_argument(
        "--eval-count", type=int, help=train_help("generated images per in-training evaluation", "eval_count")
    )
    add_switch(
        group,
        "--tensorboard",
        train_help(
            "also write TensorBoard event files (losses, KID, grids, per-hospital curves) to RUN/tensorboard; "
            "needs pip install 'fedgan[tensorboard]'",
            "tensorboard",
        ),
    )
    group.add_argument(
        "--memory-mb",
        type=float,
        help=train_help(
            "training images held in memory up to this many MB (decoded float32); a larger split, or hospital "
            "partition, streams from the store's shards in blocks of this size, so memory stays flat in store size",
            "memory_mb",
        ),
    )
    group.add_argument(
        "--keep-checkpoints",
        type=int,
        help=train_help("newest epoch/round checkpoints to keep besides best.pt; 0 keeps all", "keep_checkpoints"),
    )
    group = parser.add_argument_group(
        "differential privacy (DP-SGD on the GAN's discriminator, which needs --no-spectral-norm --norm group; or on "
        "the DDPM's UNet)"
    )
    group.add_argument(
        "--dp-epsilon",
        type=float,
        help=train_help("target epsilon over the whole run, which sets the noise; 0: no DP", "dp_epsilon"),
    )
    group.add_argument(
        "--dp-noise", type=float, help=train_help("noise multiplier instead of a target epsilon; 0: no DP", "dp_noise")
    )
    group.add_argument("--dp-clip", type=float, help=train_help("per-sample gradient norm bound", "dp_clip"))
    group.add_argument("--dp-delta", type=float, help=train_help("delta of the guarantee, below 1/images", "dp_delta"))
    group = parser.add_argument_group("model")
    group.add_argument("--latent-dim", type=int, help=model_help("size of z", "latent_dim"))
    group.add_argument("--generator-width", type=int, help=model_help("generator channels at 4x4", "generator_width"))
    group.add_argument(
        "--discriminator-width",
        type=int,
        help=model_help("discriminator channels of its first block", "discriminator_width"),
    )
    group.add_argument(
        "--norm", choices=NORMS, help=model_help("normalisation layers of G, and of D without spectral norm", "norm")
    )
    add_switch(group, "--spectral-norm", model_help("spectrally normalised D without norm layers", "spectral_norm"))
    group.add_argument(
        "--upsample", choices=UPSAMPLES, help=model_help("G upsampling: transposed conv or resize + conv", "upsample")
    )
    add_switch(group, "--grade-norm", model_help("conditional: per-grade gain and bias in every G block", "grade_norm"))
    add_switch(group, "--grade-head", model_help("conditional: D also classifies the grade (AC-GAN)", "grade_head"))
    add_switch(
        group,
        "--twin-head",
        model_help("with --grade-head: a twin classifier of generated images' grades (TAC-GAN)", "twin_head"),
    )
    group = parser.add_argument_group("diffusion model (--model ddpm; it learns at --lr-generator)")
    group.add_argument("--width", type=int, help=diffusion_help("UNet channels at full resolution", "width"))
    group.add_argument(
        "--levels", type=int, help=diffusion_help("UNet resolutions; the lowest has attention", "levels")
    )
    group.add_argument(
        "--layers-per-block", type=int, help=diffusion_help("residual blocks per level", "layers_per_block")
    )
    group.add_argument("--timesteps", type=int, help=diffusion_help("noise levels (cosine schedule)", "timesteps"))
    group.add_argument("--prediction", choices=PREDICTIONS, help=diffusion_help("what the UNet predicts", "prediction"))
    group.add_argument(
        "--sample-steps", type=int, help=diffusion_help("DDIM steps per sample (samples, evaluation)", "sample_steps")
    )
    group.add_argument(
        "--guidance",
        type=float,
        help=diffusion_help("classifier-free guidance scale; 1: none, one UNet pass per step", "guidance"),
    )
    group.add_argument(
        "--label-dropout",
        type=float,
        help=diffusion_help("share of training images whose grade is hidden (for guidance)", "label_dropout"),
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N (default: auto)")


#: the model flags of each kind; a flag of the other kind is an error, not silently ignored
MODEL_FLAGS = {
    "gan": (
        "latent_dim",
        "generator_width",
        "discriminator_width",
        "norm",
        "spectral_norm",
        "upsample",
        "grade_norm",
        "grade_head",
        "twin_head",
    ),
    "ddpm": (
        "width",
        "levels",
        "layers_per_block",
        "timesteps",
        "prediction",
        "sample_steps",
        "guidance",
        "label_dropout",
    ),
}


def model_list(text: str) -> str:
    """--model of `sweep`: comma-separated kinds, checked here so a typo is a usage error."""
    kinds = [kind.strip() for kind in text.split(",")]
    unknown = [kind for kind in kinds if kind not in MODELS]
    if unknown or len(set(kinds)) != len(kinds):
        raise argparse.ArgumentTypeError(f"{text!r}: give each of {', '.join(MODELS)} at most once, comma-separated")
    return ",".join(kinds)


def model_configs(args: argparse.Namespace, kind: str | None = None, **train_defaults: Any) -> tuple[Any, Any]:
    """(GANConfig or DiffusionConfig, TrainConfig) of `kind` (default: --model) from its recipe, then
    --config [model]/[train], then flags. A flag of a kind that no --model names is an error."""
    import dataclasses

    from fedgan.config import from_dict, load_toml_section
    from fedgan.errors import FedGANError

    kind = kind or args.model
    for other in (k for k in MODEL_FLAGS if k not in args.model.split(",")):
        stray = [name for name in MODEL_FLAGS[other] if getattr(args, name, None) is not None]
        if stray:
            raise FedGANError(f"--{stray[0].replace('_', '-')} is a {other} setting; --model is {args.model}")
    model_class = DiffusionConfig if kind == "ddpm" else GANConfig
    default = "ddpm" if kind == "ddpm" else DEFAULT_RECIPE
    recipe = args.recipe or default
    if (recipe == "ddpm") != (kind == "ddpm"):  # a recipe is for one kind of model
        if "," not in args.model:
            raise FedGANError(
                f"--recipe {recipe} is for the {'ddpm' if recipe == 'ddpm' else 'gan'}; --model is {kind}"
            )
        recipe = default  # a sweep of several kinds: the recipe applies to its own kind
    if recipe == "graded" and not getattr(args, "conditional", False):
        raise FedGANError("--recipe graded trains a grade-conditional GAN: add --conditional")
    train_fields = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("seed", "sample_count"))
    model, train = apply_recipe(recipe, model_class(), TrainConfig(**train_defaults, seed=args.seed))
    if args.config:
        model = from_dict(model_class, load_toml_section(args.config, "model"), base=model)
        train = from_dict(TrainConfig, load_toml_section(args.config, "train"), base=train)
    model = from_dict(model_class, config_overrides(args, MODEL_FLAGS[kind]), base=model)
    train = from_dict(TrainConfig, config_overrides(args, train_fields), base=train)
    return model, train


def config_overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """Flags the user actually gave (argparse defaults are None), by config field name."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def quality_probe(store: Path, train: Any) -> Any:
    """The in-training quality probe when `--eval-every` asks for one (it needs the store's evaluator)."""
    if not train.eval_every:
        return None
    from fedgan.evaluation.probe import QualityProbe

    return QualityProbe.for_store(store, count=train.eval_count, seed=train.seed)
