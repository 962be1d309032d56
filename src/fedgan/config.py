"""Typed, frozen configuration shared by the command line, the store manifest and run folders.

One home for every tunable: dataclasses declare the defaults and their intent, TOML files and
command-line overrides are checked against them (unknown keys and wrong types are errors, not
silently ignored), and `to_dict` gives the exact record that is written next to the outputs so a
run can be reproduced. TOML uses kebab-case keys (Flower's convention); Python uses snake_case.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from fedgan.errors import FedGANError

T = TypeVar("T")

#: EyePACS (Kaggle 2015) training-set grade frequencies: 25810/2443/5292/873/708 of 35126.
SCREENING_GRADE_MIX: tuple[float, ...] = (0.735, 0.070, 0.151, 0.024, 0.020)
NUM_GRADES = 5
# Choice names, here so that the command line can offer them without importing torch.
LOSSES = ("hinge", "bce")
NORMS = ("batch", "group", "none")
PARTITIONS = (
    "label-split",
    "dirichlet",
    "iid",
)  # how a store's training split is divided among hospitals (fedgan.data.partition)
LAYOUTS = ("auto", "eyepacs", "aptos", "folder", "dicom")  # input layouts `prepare` reads (fedgan.data.prepare)
WEIGHTINGS = ("examples", "unweighted")  # FedAvg's weights: by images, or the paper's unweighted mean
UPSAMPLES = ("transposed", "resize")
MODELS = ("gan", "ddpm")  # the kinds of generative model (`--model`): the paper's DCGAN, or a denoising diffusion model
PREDICTIONS = ("epsilon", "v_prediction")  # what a DDPM's UNet predicts (diffusers' `prediction_type`)
AUGMENTATIONS = ("translation", "cutout", "color")  # DiffAugment transforms, see fedgan.training.augment
ALGORITHMS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedprox", "mdgan")  # see fedgan.federation.algorithms
#: how a hospital's trained model travels to the server (`fedgan.federation.wire`): as float32 weights, or as its
#: update in float16 (half the bytes). bfloat16 is not offered: Flower's arrays travel as numpy, which lacks it.
WIRES = ("fp32", "fp16")
#: mdgan: who judges an image (see `fedgan.training.split.one_judge_each`)
JUDGES = ("all", "one")
#: what a hospital may reveal beyond its weight and id (`--disclose`): images per grade; mean losses, steps, seconds
DISCLOSURES = ("grades", "losses")
AGGREGATIONS = (
    "mean",
    "median",
    "trimmed-mean",
    "krum",
)  # fedavg's combination of replies (Flower's robust strategies)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """The preprocessing pipeline, in the order the steps run (see `fedgan.data.preprocess`)."""

    size: int = 128  # output height and width in pixels (the paper's 128x128)
    grayscale: bool = True  # one channel, as the paper's models expect
    crop_fov: bool = True  # crop to the round field of view before resizing, so circles stay round
    interpolation: str = "area"  # resize filter: area (best for shrinking), bilinear (the paper), bicubic
    clahe_clip: float = 2.0  # CLAHE contrast limit; 0 disables CLAHE
    clahe_tiles: int = 8  # CLAHE grid is tiles x tiles
    gamma: float = 1.4  # x ** gamma after normalising to [0, 1]; 1 disables
    bins: int = 16  # quantise to round(x * bins) / bins; 0 disables
    window_center: float = 40.0  # DICOM only: Hounsfield window centre (abdominal soft tissue)
    window_width: float = 400.0  # DICOM only: Hounsfield window width
    # Input limits, checked from the header before anything is decoded: a 1 MB PNG can declare
    # 13000x13000 16-bit pixels (1 GB decoded). Fundus cameras give at most ~20 megapixels.
    max_megapixels: float = 50.0  # larger images are skipped, named in one line
    max_file_mb: float = 200.0  # larger files are skipped unread

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 4096:
            raise FedGANError(f"preprocess size must be between 8 and 4096, got {self.size}")
        if self.max_megapixels <= 0 or self.max_file_mb <= 0:
            raise FedGANError("max-megapixels and max-file-mb must be positive")
        if self.interpolation not in ("area", "bilinear", "bicubic"):
            raise FedGANError(f"interpolation must be area, bilinear or bicubic, got {self.interpolation!r}")
        if self.clahe_clip < 0 or self.clahe_tiles < 1:
            raise FedGANError("clahe-clip must be >= 0 and clahe-tiles >= 1")
        if self.gamma <= 0 or self.bins < 0 or self.window_width <= 0:
            raise FedGANError("gamma and window-width must be > 0 and bins >= 0")


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """How a prepared store is laid out on disk."""

    shard_size: int = (
        256  # records per shard (16 MiB of float32 at 128 px, ~2.5 MiB gzipped); the unit of parallel work
    )
    compression: str = "gzip"  # gzip (the paper's choice; binned images shrink ~10x) or none
    heldout_fraction: float = 0.2  # stratified by grade; never read by training, only by evaluation
    seed: int = 0  # fixes the held-out split

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise FedGANError(f"shard-size must be >= 1, got {self.shard_size}")
        if self.compression not in ("gzip", "none"):
            raise FedGANError(f"compression must be gzip or none, got {self.compression!r}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise FedGANError(f"heldout-fraction must be in [0, 1), got {self.heldout_fraction}")


@dataclasses.dataclass(frozen=True)
class GANConfig:
    """The networks' shape (`fedgan.models.dcgan` builds them); here so that settings and `--help` need no torch."""

    resolution: int = 128  # output height and width; a power of two >= 16 (64/128/256 are the documented ones)
    channels: int = 1  # image channels (1: grayscale medical images)
    latent_dim: int = 200  # size of z, the paper's 200
    generator_width: int = 1024  # generator channels at 4x4; halved by each upsampling block
    discriminator_width: int = 64  # discriminator channels after its first block; doubled by each block
    norm: str = "batch"  # batch | group | none: the generator's, and the discriminator's unless spectral_norm
    num_classes: int = 0  # 0: unconditional; 5: conditional on the DR grade
    spectral_norm: bool = True  # spectrally normalised discriminator without norm layers (False: the paper's)
    upsample: str = "transposed"  # transposed (the paper's) | resize (nearest + 3x3 conv)
    grade_norm: bool = False  # conditional: per-grade gain and bias after each generator block's norm layer
    grade_head: bool = False  # conditional: D also classifies the grade (AC-GAN); TrainConfig.grade_weight weighs it
    twin_head: bool = False  # with grade_head: a twin classifier of generated images' grades (TAC-GAN)

    def __post_init__(self) -> None:
        if self.resolution < 16 or self.resolution & (self.resolution - 1):
            raise FedGANError(f"resolution must be a power of two >= 16, got {self.resolution}")
        if self.norm not in NORMS:
            raise FedGANError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.upsample not in UPSAMPLES:
            raise FedGANError(f"upsample must be one of {', '.join(UPSAMPLES)}, got {self.upsample!r}")
        if self.generator_width >> self.blocks < 1:
            raise FedGANError(
                f"generator-width {self.generator_width} is too small for {self.blocks} upsampling blocks"
            )
        if min(self.latent_dim, self.channels, self.discriminator_width) < 1 or self.num_classes < 0:
            raise FedGANError("latent-dim, channels and discriminator-width must be positive, num-classes >= 0")

    @property
    def blocks(self) -> int:
        """Number of stride-2 blocks between 4x4 and the full resolution."""
        return int(math.log2(self.resolution // 4))

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def has_grade_head(self) -> bool:
        return self.grade_head and self.conditional

    @property
    def has_twin_head(self) -> bool:
        return self.twin_head and self.has_grade_head

    @property
    def kind(self) -> str:
        return "gan"


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """A grade-conditional denoising diffusion model (`fedgan.models.ddpm`): diffusers' UNet2DModel
    trained as a DDPM, sampled with DDIM and classifier-free guidance. Small by default because a
    CPU must train it: `benchmarks/gan_vs_ddpm.py` measures it against the GAN at equal time."""

    resolution: int = 64  # output height and width (from the store); a power of two >= 16
    channels: int = 1  # image channels
    num_classes: int = 0  # 0: unconditional; 5: conditional on the DR grade (plus a "no grade" for guidance)
    width: int = 16  # UNet channels at full resolution; doubled at each level down to at most 4x width
    levels: int = 4  # UNet resolutions (the lowest one has self-attention)
    layers_per_block: int = 1  # residual blocks per level
    timesteps: int = 1000  # noise levels of the forward process (cosine schedule)
    prediction: str = "v_prediction"  # PREDICTIONS: v keeps the loss balanced across noise levels (Salimans & Ho 2022)
    sample_steps: int = 25  # DDIM steps when sampling (deterministic, eta 0): fewer is faster and a little blurrier
    guidance: float = 1.0  # classifier-free guidance scale; 1: the conditional model alone (one UNet pass per step)
    label_dropout: float = 0.1  # share of training images whose grade is hidden, so the model also learns "no grade"

    def __post_init__(self) -> None:
        if self.resolution < 16 or self.resolution & (self.resolution - 1):
            raise FedGANError(f"resolution must be a power of two >= 16, got {self.resolution}")
        if self.resolution >> (self.levels - 1) < 4 or not 2 <= self.levels <= 6:
            raise FedGANError(f"levels must be 2-6 and leave at least 4x4 pixels at the lowest, got {self.levels}")
        if self.prediction not in PREDICTIONS:
            raise FedGANError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {self.prediction!r}")
        if self.width < 8 or self.width % 8 or self.layers_per_block < 1 or self.timesteps < 2:
            raise FedGANError("width must be a multiple of 8, layers-per-block >= 1 and timesteps >= 2")
        if not 1 <= self.sample_steps <= self.timesteps or self.guidance < 1 or not 0 <= self.label_dropout < 1:
            raise FedGANError("need 1 <= sample-steps <= timesteps, guidance >= 1 and 0 <= label-dropout < 1")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def latent_dim(self) -> int:
        """The noise one image starts from: a full image of it (generation maps noise to image as a GAN's does)."""
        return self.channels * self.resolution * self.resolution

    @property
    def kind(self) -> str:
        return "ddpm"


ModelConfig = GANConfig | DiffusionConfig


def model_record(config: ModelConfig) -> dict[str, Any]:
    """A model config as checkpoints and federation messages carry it: its fields and its kind."""
    return {**dataclasses.asdict(config), "kind": config.kind}


def model_table(config: ModelConfig) -> dict[str, Any]:
    """A model config as a run record's [model] table: its kind, then its fields in kebab-case."""
    return {"kind": config.kind, **to_dict(config)}


def model_from_record(record: dict[str, Any]) -> ModelConfig:
    """The config `model_record` wrote (or a deployment's `model.*` settings, kebab-case): a record
    without a kind is a GAN, as are checkpoints from before the DDPM."""
    values = dict(record)
    kind = values.pop("kind", "gan")
    if kind not in MODELS:
        raise FedGANError(f"unknown model kind {kind!r}; known: {', '.join(MODELS)}")
    return from_dict(DiffusionConfig if kind == "ddpm" else GANConfig, values)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The local GAN training loop, shared by centralised training, pretraining and each hospital."""

    epochs: int = 5  # passes over the (local) training split; the paper's 5 local epochs
    batch_size: int = 64  # the paper used 16; 64 uses a CPU's cores far better
    lr_generator: float = 1e-4  # Adam; two time-scales (TTUR, Heusel et al. 2017): D learns 4x faster than G
    lr_discriminator: float = 4e-4  # (the paper: 2e-4 for both)
    beta1: float = 0.0  # Adam momentum off, as SN-GAN/BigGAN/StyleGAN (the paper, as DCGAN: 0.5)
    beta2: float = 0.99  # (the paper: 0.999)
    real_label: float = 0.9  # one-sided label smoothing of the bce loss (the paper's 0.9); 1.0 disables
    d_steps: int = 1  # discriminator updates per generator update
    seed: int = 0  # initial weights, data order and noise all follow from it
    sample_count: int = 64  # images in each fixed-noise sample grid
    # The small-data recipe (see fedgan.training.recipes; `--recipe paper` switches all of it off)
    loss: str = "hinge"  # hinge (SN-GAN, BigGAN) or bce (the paper's, non-saturating for G)
    augment: str = "translation,cutout,color"  # DiffAugment policy for real and fake images, "" for none
    mirror: bool = (
        True  # mirror half of the real images (a mirrored left eye is a right eye): twice the data, same distribution
    )
    ema_decay: float = 0.999  # EMA of the generator's weights (samples, evaluation and releases use it); 0 disables
    r1_gamma: float = 0.0  # R1 gradient penalty on real images (lazy, every r1-every steps); 0 disables
    r1_every: int = 16  # discriminator steps between R1 penalties
    balance_grades: bool = False  # draw training images with every grade equally likely (rare grades practised more)
    grade_weight: float = 1.0  # with a grade head: weight of its cross-entropy on real images in D's loss
    generator_grade_weight: float = 1.0  # with a grade head: weight of its cross-entropy on fakes in G's loss
    eval_every: int = 0  # generator steps between in-training KID/FD evaluations on the store's fixed evaluator; 0: off
    eval_count: int = 256  # generated images per in-training evaluation
    keep_checkpoints: int = 3  # newest epoch/round checkpoints kept (besides best.pt); 0 keeps all
    # Training images are held in memory up to this many MB (decoded float32); a larger split (or
    # hospital partition) streams from the store's shards in blocks of this size (fedgan.training.data).
    memory_mb: float = 2048.0
    tensorboard: bool = False  # also write TensorBoard event files to RUN/tensorboard (the `tensorboard` extra)
    # Differential privacy of the discriminator (DP-SGD, see fedgan.training.privacy): off unless
    # a target epsilon or a noise multiplier is given.
    dp_epsilon: float = 0.0  # target epsilon over the whole run; sets the noise multiplier
    dp_noise: float = 0.0  # noise multiplier, when no target epsilon is given
    dp_clip: float = 1.0  # per-sample gradient norm bound
    dp_delta: float = 1e-5  # delta of the (epsilon, delta) guarantee; below 1/N for N images

    @property
    def private(self) -> bool:
        return self.dp_epsilon > 0 or self.dp_noise > 0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.d_steps < 1:
            raise FedGANError("epochs must be >= 0, batch-size and d-steps >= 1")
        if self.loss not in LOSSES:
            raise FedGANError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0 <= self.ema_decay < 1 or min(self.r1_gamma, self.grade_weight, self.generator_grade_weight) < 0:
            raise FedGANError("need 0 <= ema-decay < 1, and r1-gamma, grade-weight and generator-grade-weight >= 0")
        if self.r1_every < 1:
            raise FedGANError(f"r1-every must be >= 1, got {self.r1_every}")
        if self.eval_every < 0 or self.eval_count < 10 or self.keep_checkpoints < 0:
            raise FedGANError("need eval-every >= 0, eval-count >= 10 and keep-checkpoints >= 0")
        if not 0.5 < self.real_label <= 1.0:
            raise FedGANError(f"real-label must be in (0.5, 1], got {self.real_label}")
        if min(self.lr_generator, self.lr_discriminator) <= 0:
            raise FedGANError("learning rates must be > 0")
        if min(self.dp_epsilon, self.dp_noise) < 0 or self.dp_clip <= 0 or not 0 < self.dp_delta < 1:
            raise FedGANError("need dp-epsilon >= 0, dp-noise >= 0, dp-clip > 0 and 0 < dp-delta < 1")


def train_from_record(record: dict[str, Any]) -> TrainConfig:
    """The `TrainConfig` a checkpoint recorded. Checkpoints from before `generator_grade_weight`
    existed applied `grade_weight` to the generator too, so that is what resuming them keeps."""
    values = dict(record)
    values.setdefault("generator_grade_weight", values.get("grade_weight", TrainConfig.grade_weight))
    return TrainConfig(**values)


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
    """How a federation combines its hospitals (see `fedgan.federation.algorithms`).

    `server_lr` 0 means the algorithm's own default (`SERVER_LR` there), chosen by measurement:
    a server-side Adam step is normalised, so its size must match one round's local change
    (about local steps x the local learning rate), not Flower's generic 0.1.
    """

    name: str = "fedavg"  # one of ALGORITHMS
    server_lr: float = 0.0  # fedavgm/fedadam/fedyogi: the server's step size; 0: the algorithm's default
    server_momentum: float = 0.9  # fedavgm: momentum of the server's SGD; fedadam/fedyogi: beta1
    proximal_mu: float = 0.01  # fedprox: weight of mu/2 |w - w_global|^2 in each hospital's losses
    pack: int = 2  # mdgan: generator steps whose images travel in one message exchange (measured: 3+ degrades G)
    aggregation: str = "mean"  # fedavg: mean, or a robust rule (median, trimmed-mean, krum) against hostile hospitals
    byzantine: int = 1  # krum: hospitals assumed hostile
    wire: str = "fp32"  # WIRES: how a hospital's model travels back; fp16 sends its update in half precision
    judges: str = "all"  # mdgan, JUDGES: every hospital holding an image's grade judges it, or one drawn by its share

    def __post_init__(self) -> None:
        if self.wire not in WIRES:
            raise FedGANError(f"wire must be one of {', '.join(WIRES)}, got {self.wire!r}")
        if self.judges not in JUDGES:
            raise FedGANError(f"judges must be one of {', '.join(JUDGES)}, got {self.judges!r}")
        if self.name not in ALGORITHMS:
            raise FedGANError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.name!r}")
        if self.aggregation not in AGGREGATIONS:
            raise FedGANError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}")
        if self.aggregation != "mean" and self.name != "fedavg":
            raise FedGANError(
                f"--aggregation {self.aggregation} replaces fedavg's mean; it does not combine with --algorithm "
                f"{self.name}"
            )
        if (
            self.server_lr < 0
            or not 0 <= self.server_momentum < 1
            or self.proximal_mu < 0
            or self.pack < 1
            or self.byzantine < 0
        ):
            raise FedGANError(
                "need server-lr >= 0, 0 <= server-momentum < 1, proximal-mu >= 0, pack >= 1 and byzantine >= 0"
            )


@dataclasses.dataclass(frozen=True)
class FederationConfig:
    """A federation's settings that a user chooses, with their defaults: `fedgan federate`'s
    flags and help, `federation.simulate.federate` and `FederationSettings` all take them from
    `FEDERATION`, so a default is written once."""

    partition: str = "label-split"  # PARTITIONS
    rounds: int = 2  # rounds in total
    local_epochs: int = 1  # each hospital's epochs per round
    alpha: float = 0.5  # Dirichlet concentration (partition "dirichlet")
    fraction: float = 1.0  # share of hospitals sampled each round
    weighting: str = "examples"  # WEIGHTINGS
    min_successful: int = 1  # a round goes on while at least this many hospitals succeed
    client_cpus: float = 0.0  # simulation: cores per virtual hospital (0.5: two share a core); 0: all, they take turns
    round_timeout: float = 3600.0  # seconds a round (or a SecAgg+ stage) waits for replies; the late are left out
    disclose: tuple[str, ...] = ("losses",)  # DISCLOSURES a hospital reveals beyond its weight and id
    secagg_clip: float = 8.0  # SecAgg+: update values are clipped to [-clip, clip] (Flower's default range)
    client_dp_clip: float = 1.0  # client-level DP: L2 bound of each hospital's whole update


FEDERATION = FederationConfig()
PAPER_SIZES = (3, 5, 7, 10)  # the federation sizes of the paper's sweep (`fedgan sweep`)
SWEEP_ROUNDS = 3


def to_kebab(name: str) -> str:
    return name.replace("_", "-")


def to_dict(config: Any) -> dict[str, Any]:
    """The config as a TOML/JSON-ready mapping with kebab-case keys."""
    return {to_kebab(k): v for k, v in dataclasses.asdict(config).items()}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a field type; ints are accepted where floats are expected."""
    target = annotation if isinstance(annotation, type) else typing.get_origin(annotation)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(annotation, types.UnionType) or target is None:
        return value
    if target is bool and not isinstance(value, bool):
        raise FedGANError(f"config key {to_kebab(key)!r} must be true or false, got {value!r}")
    if not isinstance(value, target) or (target is int and isinstance(value, bool)):
        raise FedGANError(f"config key {to_kebab(key)!r} must be {target.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], values: dict[str, Any], *, base: T | None = None) -> T:
    """Build `cls` from kebab- or snake-case keys over `base` (or the defaults).

    Unknown keys are an error that lists the known ones, so a typo never silently falls back to
    a default.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    updates: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        if key not in known:
            choices = ", ".join(sorted(to_kebab(k) for k in known))
            raise FedGANError(f"unknown config key {raw_key!r} for {cls.__name__}; known: {choices}")
        updates[key] = _coerce(value, hints[key], key)
    start = base if base is not None else cls()
    return dataclasses.replace(start, **updates)  # type: ignore[type-var]


def load_toml_section(path: Path, section: str) -> dict[str, Any]:
    """One `[section]` of a TOML file, with a one-line error for unreadable files."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FedGANError(f"{path}: cannot read config ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise FedGANError(f"{path}: not valid TOML ({exc})") from exc
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise FedGANError(f"{path}: [{section}] must be a table")
    return table
