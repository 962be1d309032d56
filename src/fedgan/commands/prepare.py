"""`fedgan prepare`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import add_common, command, config_overrides, with_default
from fedgan.config import LAYOUTS, PreprocessConfig, StoreConfig

PREPROCESS, STORE = PreprocessConfig(), StoreConfig()


def add_parser(sub: Any) -> None:
    prepare = command(
        sub,
        "prepare",
        "preprocess a data set into a TFRecord store",
        """
        Read a data set, run the preprocessing pipeline (crop to the field of view, resize,
        grayscale, CLAHE, normalise, gamma, binning, rescale to [-1, 1]) in worker processes
        and write sharded TFRecord files plus manifest.json. A stratified held-out split is set
        aside for evaluation. Unreadable files and bad CSV rows are skipped with a one-line
        report each; --strict turns any skip into an error. Nothing is left behind on failure.

        Layouts: eyepacs (train/*.jpeg + trainLabels.csv image,level), aptos
        (train_images/*.png + train.csv id_code,diagnosis), folder (any images; sub-folders
        0-4 give grades), dicom (*.dcm series). auto picks by the files present.
        Settings come from defaults, then --config FILE [preprocess]/[store] tables, then flags.
        """,
        """
        fedgan prepare --input data/eyepacs --out stores/fundus
        fedgan prepare --input aptos2019 --layout aptos --out stores/aptos --size 256 --strict
        fedgan prepare --input data/rsna-ct --out stores/ct --window-center 40 --window-width 400
        """,
    )
    prepare.add_argument("--input", type=Path, required=True, help="data set folder")
    prepare.add_argument("--out", type=Path, required=True, help="store folder to create")
    prepare.add_argument(
        "--layout",
        default=LAYOUTS[0],
        choices=LAYOUTS,
        help=with_default("input layout", LAYOUTS[0]),
    )
    prepare.add_argument(
        "--labels", type=Path, default=None, help="labels CSV if not at its usual place (eyepacs/aptos)"
    )
    prepare.add_argument("--config", type=Path, default=None, help="TOML file with [preprocess] and [store] tables")
    group = prepare.add_argument_group("preprocessing (defaults: the paper's settings)")
    group.add_argument("--size", type=int, help=with_default("output size in pixels", PREPROCESS.size))
    group.add_argument(
        "--color",
        dest="grayscale",
        action="store_false",
        default=None,
        help="keep 3 colour channels instead of grayscale",
    )
    group.add_argument(
        "--no-crop-fov",
        dest="crop_fov",
        action="store_false",
        default=None,
        help="do not crop to the field of view before resizing",
    )
    group.add_argument(
        "--interpolation",
        choices=("area", "bilinear", "bicubic"),
        help=with_default("resize filter", PREPROCESS.interpolation),
    )
    group.add_argument(
        "--clahe-clip", type=float, help=with_default("CLAHE clip limit, 0 disables", PREPROCESS.clahe_clip)
    )
    group.add_argument("--clahe-tiles", type=int, help=with_default("CLAHE tiles per side", PREPROCESS.clahe_tiles))
    group.add_argument("--gamma", type=float, help=with_default("gamma exponent, 1 disables", PREPROCESS.gamma))
    group.add_argument("--bins", type=int, help=with_default("quantisation levels, 0 disables", PREPROCESS.bins))
    group.add_argument(
        "--window-center", type=float, help=with_default("DICOM Hounsfield window centre", PREPROCESS.window_center)
    )
    group.add_argument(
        "--window-width", type=float, help=with_default("DICOM Hounsfield window width", PREPROCESS.window_width)
    )
    group = prepare.add_argument_group("input limits (checked before decoding; larger files are skipped and named)")
    group.add_argument(
        "--max-megapixels",
        type=float,
        help=with_default("largest image, from its header", PREPROCESS.max_megapixels),
    )
    group.add_argument("--max-file-mb", type=float, help=with_default("largest file", PREPROCESS.max_file_mb))
    group = prepare.add_argument_group("store")
    group.add_argument("--shard-size", type=int, help=with_default("records per shard", STORE.shard_size))
    group.add_argument(
        "--compression", choices=("gzip", "none"), help=with_default("TFRecord compression", STORE.compression)
    )
    group.add_argument(
        "--heldout",
        dest="heldout_fraction",
        type=float,
        help=with_default("held-out fraction for evaluation", STORE.heldout_fraction),
    )
    prepare.add_argument("--strict", action="store_true", help="stop at the first problem instead of skipping")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing store")
    add_common(prepare, workers=True)
    prepare.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    import dataclasses

    from fedgan.config import from_dict, load_toml_section
    from fedgan.data.prepare import prepare_store

    preprocess_fields = tuple(f.name for f in dataclasses.fields(PreprocessConfig))
    store_fields = ("shard_size", "compression", "heldout_fraction")
    preprocess = PreprocessConfig()
    store = StoreConfig(seed=args.seed)
    if args.config:
        preprocess = from_dict(PreprocessConfig, load_toml_section(args.config, "preprocess"))
        store = from_dict(StoreConfig, {"seed": args.seed, **load_toml_section(args.config, "store")})
    preprocess = from_dict(PreprocessConfig, config_overrides(args, preprocess_fields), base=preprocess)
    store = from_dict(StoreConfig, config_overrides(args, store_fields), base=store)
    summary = prepare_store(
        args.input,
        args.out,
        layout=args.layout,
        labels_csv=args.labels,
        preprocess_config=preprocess,
        store_config=store,
        strict=args.strict,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    total = sum(summary.written.values())
    print(
        f"prepared {total} image{'s' if total != 1 else ''} ({summary.layout} layout) into {summary.out}: "
        f"train {summary.written['train']}, held-out {summary.written['heldout']}; "
        f"{summary.seconds:.1f} s, {summary.images_per_second:.1f} images/s"
    )
    if summary.skipped:
        reasons = "; ".join(f"{n} {reason}" for reason, n in summary.skip_reasons().items())
        print(f"skipped {len(summary.skipped)}: {reasons} (each listed above and in manifest.json)")
    else:
        print("skipped 0")
