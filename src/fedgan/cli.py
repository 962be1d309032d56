"""The `fedgan` command: parses arguments and wires the library together, nothing more."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

from fedgan import __version__
from fedgan.config import AGGREGATIONS, ALGORITHMS, AUGMENTATIONS, LOSSES, NORMS, UPSAMPLES, AlgorithmConfig
from fedgan.errors import FedGANError
from fedgan.training.recipes import DEFAULT_RECIPE, RECIPES

log = logging.getLogger("fedgan")

MAIN_EPILOG = """\
typical flow:
  fedgan synth fundus --out data/eyepacs --count 2000     # or use your own EyePACS/APTOS/DICOM data
  fedgan prepare --input data/eyepacs --out stores/fundus
  fedgan inspect stores/fundus
  fedgan partition stores/fundus --clients 5 --partition label-split
  fedgan train --store stores/fundus --out runs/central --epochs 5
  fedgan federate --store stores/fundus --clients 5 --rounds 2 --out runs/fed5
  fedgan evaluate runs/fed5 --real stores/fundus && fedgan report runs/fed5
  fedgan audit runs/fed5 --members stores/fundus --non-members stores/fundus:heldout
  fedgan sample runs/fed5 --count 5000 --out synthetic/fed5   # the dataset to publish
  fedgan sweep --store stores/fundus --clients 3,5,7,10 --out runs/sweep
  fedgan demo                                             # all of the above on embedded data

Run `fedgan COMMAND --help` for each command's options and examples.
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add_common(parser: argparse.ArgumentParser, *, seed: bool = True, workers: bool = False) -> None:
    if seed:
        parser.add_argument(
            "--seed", type=int, default=0, help="random seed; the same seed gives the same output (default: 0)"
        )
    if workers:
        parser.add_argument(
            "--workers", type=int, default=None, help="worker processes (default: one per available core)"
        )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _command(sub: Any, name: str, help_text: str, description: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text,
        description=textwrap.dedent(description).strip(),
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=_formatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedgan",
        description="Federated GANs for medical images: hospitals jointly train a generator of their images "
        "with Flower, without any image leaving its hospital, and publish a synthetic dataset.",
        epilog=MAIN_EPILOG,
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"fedgan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    synth = _command(
        sub,
        "synth",
        "write procedural stand-in data sets in real on-disk layouts",
        """
        Write procedural data in the layouts of real data sets, so the real readers can be used
        where no data can be downloaded: colour fundus photographs with graded diabetic
        retinopathy lesions (EyePACS layout), or abdominal CT slices as DICOM series (RSNA layout).
        """,
        """
        fedgan synth fundus --out data/eyepacs --count 2000
        fedgan synth fundus --out data/balanced --count 500 --grade-mix 1,1,1,1,1 --size 768
        fedgan synth ct --out data/rsna-ct --patients 20 --slices 48
        """,
    )
    kinds = synth.add_subparsers(dest="kind", metavar="KIND", required=True)
    fundus = _command(
        kinds,
        "fundus",
        "fundus photographs in the EyePACS layout",
        """
        Procedural colour fundus photographs, written as DIR/train/<id>.jpeg plus
        DIR/trainLabels.csv (columns image,level), exactly like the Kaggle/EyePACS set.
        Grades 0-4 follow the DR scale: 0 none, 1 microaneurysms, 2 + haemorrhages and exudates,
        3 + haemorrhages in all quadrants, cotton-wool spots, venous beading, 4 + new vessels
        and pre-retinal haemorrhage.
        """,
        """
        fedgan synth fundus --out data/eyepacs --count 2000 --seed 1
        """,
    )
    fundus.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    fundus.add_argument("--count", type=int, required=True, help="number of photographs")
    fundus.add_argument("--size", type=int, default=512, help="photograph height in pixels (default: 512)")
    fundus.add_argument(
        "--grade-mix",
        default=None,
        help="five weights for grades 0-4 (default: EyePACS screening mix 0.735,0.07,0.151,0.024,0.02)",
    )
    fundus.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_common(fundus, workers=True)
    ct = _command(
        kinds,
        "ct",
        "CT slices as DICOM series (RSNA layout)",
        """
        Procedural abdominal CT slices in Hounsfield units as real DICOM files,
        DIR/<patient>/<series>/<n>.dcm, for pretraining the generator.
        """,
        """
        fedgan synth ct --out data/rsna-ct --patients 20 --slices 48
        """,
    )
    ct.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    ct.add_argument("--patients", type=int, required=True, help="number of patients (one series each)")
    ct.add_argument("--slices", type=int, default=32, help="slices per series (default: 32)")
    ct.add_argument("--size", type=int, default=512, help="slice size in pixels (default: 512, like clinical CT)")
    ct.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_common(ct, workers=True)

    prepare = _command(
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
        default="auto",
        choices=("auto", "eyepacs", "aptos", "folder", "dicom"),
        help="input layout (default: auto)",
    )
    prepare.add_argument(
        "--labels", type=Path, default=None, help="labels CSV if not at its usual place (eyepacs/aptos)"
    )
    prepare.add_argument("--config", type=Path, default=None, help="TOML file with [preprocess] and [store] tables")
    group = prepare.add_argument_group("preprocessing (defaults: the paper's settings)")
    group.add_argument("--size", type=int, help="output size in pixels (default: 128)")
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
    group.add_argument("--interpolation", choices=("area", "bilinear", "bicubic"), help="resize filter (default: area)")
    group.add_argument("--clahe-clip", type=float, help="CLAHE clip limit, 0 disables (default: 2.0)")
    group.add_argument("--clahe-tiles", type=int, help="CLAHE tiles per side (default: 8)")
    group.add_argument("--gamma", type=float, help="gamma exponent, 1 disables (default: 1.4)")
    group.add_argument("--bins", type=int, help="quantisation levels, 0 disables (default: 16)")
    group.add_argument("--window-center", type=float, help="DICOM Hounsfield window centre (default: 40)")
    group.add_argument("--window-width", type=float, help="DICOM Hounsfield window width (default: 400)")
    group = prepare.add_argument_group("input limits (checked before decoding; larger files are skipped and named)")
    group.add_argument("--max-megapixels", type=float, help="largest image, from its header (default: 50)")
    group.add_argument("--max-file-mb", type=float, help="largest file (default: 200)")
    group = prepare.add_argument_group("store")
    group.add_argument("--shard-size", type=int, help="records per shard (default: 256)")
    group.add_argument("--compression", choices=("gzip", "none"), help="TFRecord compression (default: gzip)")
    group.add_argument(
        "--heldout", dest="heldout_fraction", type=float, help="held-out fraction for evaluation (default: 0.2)"
    )
    prepare.add_argument("--strict", action="store_true", help="stop at the first problem instead of skipping")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing store")
    _add_common(prepare, workers=True)

    inspect = _command(
        sub,
        "inspect",
        "print a store's manifest as a table",
        "Show counts per grade and split, image shape, preprocessing, shards and skipped inputs.",
        """
        fedgan inspect stores/fundus
        fedgan inspect stores/fundus --records 10 --verify
        """,
    )
    inspect.add_argument("store", type=Path, help="store folder")
    inspect.add_argument("--records", type=int, default=0, help="also list the first N records")
    inspect.add_argument("--verify", action="store_true", help="recompute every shard's sha256 against the manifest")

    part = _command(
        sub,
        "partition",
        "show how a store's training split is divided among hospitals",
        """
        Print images per grade per hospital for a partition: label-split (the paper's non-IID
        setting, hospitals hold only a few grades each), dirichlet (per-grade shares drawn from
        Dirichlet(alpha)) or iid. Federated training uses exactly this division.
        """,
        """
        fedgan partition stores/fundus --clients 5
        fedgan partition stores/fundus --clients 10 --partition dirichlet --alpha 0.3
        """,
    )
    part.add_argument("store", type=Path, help="store folder")
    part.add_argument("--clients", type=int, required=True, help="number of hospitals")
    part.add_argument(
        "--partition",
        default="label-split",
        choices=("label-split", "dirichlet", "iid"),
        help="how to divide (default: label-split)",
    )
    part.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (default: 0.5)")
    part.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    train = _command(
        sub,
        "train",
        "train the GAN centrally on one store (also CT pretraining)",
        """
        Train the DCGAN on a store's training split in one place: the centralised baseline,
        and the pretraining phase on a CT store. Writes RUN/metrics.jsonl (per-step losses),
        RUN/samples/epoch-NNNN.png (fixed noise) and RUN/checkpoints/ (both networks, both
        optimisers, RNG states, configs), and resumes from the latest checkpoint with --resume.
        Resolution and channels come from the store. Settings: defaults, then --config FILE
        ([model] and [train] tables), then flags.
        """,
        """
        fedgan train --store stores/ct --out runs/ct-pretrain --epochs 5
        fedgan train --store stores/fundus --out runs/fundus --init runs/ct-pretrain/checkpoints/latest
        fedgan train --store stores/fundus --out runs/cond --conditional --batch-size 16 --device cuda
        fedgan train --resume runs/fundus --epochs 10
        """,
    )
    train.add_argument("--store", type=Path, help="prepared store to train on")
    train.add_argument("--out", type=Path, help="run folder to create")
    train.add_argument("--resume", type=Path, metavar="RUN", help="continue RUN from its latest checkpoint")
    train.add_argument(
        "--init", type=Path, metavar="CKPT", help="start from a pretrained checkpoint's weights (transfer learning)"
    )
    _add_gan_options(train, epochs_help="epochs in total (default: 5)")
    _add_common(train)

    federate = _command(
        sub,
        "federate",
        "train the GAN across N simulated hospitals with Flower",
        """
        Flower's simulation engine runs N virtual hospitals on this machine; each trains the
        shared local loop on its own partition of the store's training split for --epochs local
        epochs per round, and the server averages generator and discriminator with FedAvg.
        --clients 1 is the centralised baseline through the same code path. Writes
        RUN/metrics.jsonl (per round and hospital: losses, examples, seconds, bytes),
        RUN/samples/round-NNNN.png and RUN/checkpoints/round-NNNN.pt; --resume RUN continues
        after the last completed round.
        """,
        """
        fedgan federate --store stores/fundus --clients 5 --partition label-split --rounds 2 --out runs/fed5
        fedgan federate --store stores/fundus --clients 10 --partition dirichlet --alpha 0.3 --rounds 5 --out runs/fed10
        fedgan federate --store stores/fundus --clients 3 --rounds 2 --out runs/fed3 --init runs/ct/checkpoints/latest
        fedgan federate --store stores/fundus --clients 5 --rounds 2 --out runs/fed5-secure --secagg
        fedgan federate --resume runs/fed5 --rounds 4
        """,
    )
    federate.add_argument("--store", type=Path, help="prepared store whose training split the hospitals share out")
    federate.add_argument("--out", type=Path, help="run folder to create")
    federate.add_argument("--resume", type=Path, metavar="RUN", help="continue RUN after its last completed round")
    federate.add_argument(
        "--init", type=Path, metavar="CKPT", help="start from a pretrained checkpoint (e.g. CT pretraining)"
    )
    group = federate.add_argument_group("federation")
    group.add_argument("--clients", type=int, help="number of hospitals (1 = centralised baseline)")
    group.add_argument(
        "--partition",
        default="label-split",
        choices=("label-split", "dirichlet", "iid"),
        help="how data is divided (default: label-split)",
    )
    group.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (default: 0.5)")
    group.add_argument("--rounds", type=int, help="federated rounds in total (default: 2)")
    group.add_argument(
        "--fraction", type=float, default=1.0, help="share of hospitals sampled per round (default: 1.0)"
    )
    group.add_argument(
        "--weighting",
        default="examples",
        choices=("examples", "unweighted"),
        help="FedAvg weights: by images (default) or the paper's unweighted mean",
    )
    group.add_argument(
        "--min-successful",
        type=int,
        default=1,
        help="a round goes on without failed, late or rejected hospitals while at least this many succeed (default: 1)",
    )
    group.add_argument(
        "--round-timeout",
        type=float,
        default=3600.0,
        help="seconds a round (or SecAgg+ stage) waits for replies; later ones are left out (default: 3600)",
    )
    group.add_argument(
        "--disclose",
        default="losses",
        help="what each hospital reveals beyond its image count, comma-separated: losses (mean losses, steps, "
        "seconds: the per-hospital curves), grades (images per grade); '' for nothing. mdgan always "
        "reveals grades (default: losses)",
    )
    group.add_argument(
        "--client-cpus",
        type=int,
        default=0,
        help="cores per simulated hospital; 0: all, hospitals take turns (default: 0)",
    )
    _add_algorithm_options(federate)
    group = federate.add_argument_group("client-level differential privacy (hides each hospital's whole update)")
    group.add_argument(
        "--client-dp-noise",
        type=float,
        help="noise multiplier of Flower's server-side clipping wrapper (needs --weighting unweighted)",
    )
    group.add_argument(
        "--client-dp-clip", type=float, default=1.0, help="L2 bound of each hospital's update (default: 1.0)"
    )
    group = federate.add_argument_group("secure aggregation")
    group.add_argument(
        "--secagg",
        action="store_true",
        help="aggregate with Flower's SecAgg+: the server only sees the sum of the hospitals' masked updates",
    )
    group.add_argument(
        "--secagg-clip",
        type=float,
        default=8.0,
        help="updates are clipped to +-this before quantisation onto 2^22 levels (default: 8.0; "
        "metrics.jsonl reports each hospital's clipped share)",
    )
    _add_gan_options(federate, epochs_help="local epochs per round (default: 1)")
    _add_common(federate)

    evaluate = _command(
        sub,
        "evaluate",
        "measure a run's generator against real images with the store's fixed evaluator",
        """
        Generates images from RUN's latest checkpoint and writes RUN/eval/metrics.json: Frechet
        distance, KID, precision/recall, density/coverage and the per-sample realism score in the
        feature space of the store's fixed evaluator (a grade classifier trained once on half of
        the held-out split, which no GAN reads; its sha256 is recorded), with 95 % intervals and
        per grade; utility (a grader trained on the synthetic images, tested on real held-out
        ones, beside the same grader trained on real images); and with --reference the paper's
        realism score (mean sigmoid of that checkpoint's discriminator on the generated images).
        """,
        """
        fedgan evaluate runs/fed5 --real stores/fundus
        fedgan evaluate runs/fed5 --real stores/fundus --reference runs/central --count 2000
        """,
    )
    evaluate.add_argument("run", type=Path, help="run folder (or checkpoint) to evaluate")
    evaluate.add_argument(
        "--real", type=Path, required=True, help="prepared store of the real images (graded, with a held-out split)"
    )
    evaluate.add_argument(
        "--reference",
        type=Path,
        help="checkpoint whose discriminator gives the paper's realism score (the same for all runs compared)",
    )
    evaluate.add_argument(
        "--count", type=int, help="images to generate (default: as many as the store's training split)"
    )
    evaluate.add_argument(
        "--inception-weights",
        type=Path,
        metavar="PATH",
        help="TorchScript Inception-v3 (NVIDIA's inception-2015-12-05.pt) for the standard FID too; never downloaded",
    )
    _add_common(evaluate)

    sample = _command(
        sub,
        "sample",
        "write a synthetic dataset from a run's generator (EyePACS layout when conditional)",
        """
        The dataset a federation publishes: --count images from RUN's latest checkpoint as
        lossless PNGs in DIR/train/, with DIR/trainLabels.csv (image,level) when the generator is
        grade-conditional, so DR pipelines and `fedgan prepare` read it as EyePACS; plus
        DIR/provenance.toml (checkpoint, round, seed, versions). Audit a run (`fedgan audit`)
        before publishing what it makes.
        """,
        """
        fedgan sample runs/fed5 --count 5000 --out synthetic/fed5
        fedgan sample runs/fed5 --count 1000 --out synthetic/fed5-severe --grade-mix 0,0,1,1,1
        """,
    )
    sample.add_argument("run", type=Path, help="run folder (or checkpoint)")
    sample.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    sample.add_argument("--count", type=int, required=True, help="images to generate")
    sample.add_argument(
        "--grade-mix", help="relative frequency of grades 0-4 for a conditional generator (default: balanced)"
    )
    sample.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
    _add_common(sample)

    audit = _command(
        sub,
        "audit",
        "membership-inference and memorisation audit of a run's generator and discriminator",
        """
        Attacks RUN's latest checkpoint as an outsider would: GAN-Leaks (black-box: distance of a
        real image to the closest of --samples generated ones, calibrated with --reference, a
        run trained on other data) and LOGAN (white-box: the discriminator's score, which FedAvg
        ships to every hospital). Members are images the GAN trained on, non-members images of
        the same kind it never saw (STORE means its train split, STORE:heldout its held-out
        split). Reports ROC AUC and TPR at 1 % FPR with 95 % intervals, and memorisation
        (distance of generated images to the closest training image vs held-out images'), into
        RUN/eval/privacy.json; `fedgan report RUN` shows it with the closest pairs.
        """,
        """
        fedgan audit runs/fed5 --members stores/fundus --non-members stores/fundus:heldout
        fedgan audit runs/fed5 --members stores/fundus --non-members stores/other --reference runs/other-gan
        """,
    )
    audit.add_argument("run", type=Path, help="run folder (or checkpoint) to audit")
    audit.add_argument(
        "--members", type=Path, required=True, help="STORE[:train|:heldout] whose images the GAN trained on"
    )
    audit.add_argument("--non-members", type=Path, required=True, help="STORE[:train|:heldout] of images it never saw")
    audit.add_argument("--reference", type=Path, help="a run trained on other data, to calibrate GAN-Leaks")
    audit.add_argument(
        "--samples", type=int, default=1000, help="generated images the black-box attack compares with (default: 1000)"
    )
    _add_common(audit)

    report = _command(
        sub,
        "report",
        "write RUN/report.html: losses, samples, metrics, timings in one file",
        """
        A self-contained HTML page (plots and grids inlined) from what the run folder holds:
        loss curves (per round and hospital for federations), sample grids over rounds, the
        metrics of `fedgan evaluate` with their intervals, timings, bytes communicated and the
        configuration with images per grade per hospital. Open it in any browser.
        """,
        """
        fedgan report runs/fed5
        """,
    )
    report.add_argument("run", type=Path, help="run folder")

    sweep = _command(
        sub,
        "sweep",
        "the paper's comparison: a centralised baseline and each federation size, evaluated alike",
        """
        Trains a centralised baseline (rounds x local epochs epochs) and one federation per
        --clients value (rounds of local epochs) from the same seed and budget, evaluates each
        with the store's fixed evaluator (the paper's realism score with the baseline's
        discriminator as the one reference) and writes DIR/sweep.json and DIR/report.html with
        the table (realism vs hospitals beside FD, KID, precision, recall, coverage, TSTR kappa,
        each also as a fraction of the baseline). --conditional trains grade-conditional GANs,
        which the synthetic-trained grader (TSTR) needs. Rerun the same command to resume.
        """,
        """
        fedgan sweep --store stores/fundus --clients 3,5,7,10 --rounds 5 --out runs/sweep --conditional
        fedgan sweep --store stores/fundus --clients 3,10 --rounds 2 --out runs/sw-ct --init runs/ct/checkpoints/latest
        fedgan sweep --store stores/fundus --clients 3,10 --rounds 8 --epochs 3 --algorithms fedavg,mdgan --out runs/sw
        """,
    )
    sweep.add_argument("--store", type=Path, required=True, help="prepared fundus store")
    sweep.add_argument("--out", type=Path, required=True, help="sweep folder")
    sweep.add_argument("--clients", default="3,5,7,10", help="federation sizes, comma-separated (default: 3,5,7,10)")
    sweep.add_argument(
        "--partition", default="label-split", choices=("label-split", "dirichlet", "iid"), help="(default: label-split)"
    )
    sweep.add_argument("--rounds", type=int, default=3, help="federated rounds (default: 3)")
    sweep.add_argument("--init", type=Path, metavar="CKPT", help="start every member from this pretrained checkpoint")
    sweep.add_argument(
        "--count", type=int, help="generated images per evaluation (default: as many as real training images)"
    )
    sweep.add_argument(
        "--algorithms",
        default="fedavg",
        help=f"federated algorithms to compare, comma-separated from {', '.join(ALGORITHMS)} (default: fedavg)",
    )
    _add_algorithm_options(sweep)
    _add_gan_options(sweep, epochs_help="local epochs per round; the baseline trains rounds x this (default: 1)")
    _add_common(sweep)

    certs = _command(
        sub,
        "certs",
        "make the TLS certificates and hospital keys of a secure deployment",
        """
        Writes into DIR: a certificate authority (ca.crt, ca.key), the SuperLink's TLS
        certificate for the --host names it is reached at (superlink.crt, superlink.key), and one
        EC P-384 key pair per hospital for Flower's SuperNode authentication
        (hospitals/hospital-N.key and .pub, OpenSSH format). Register each .pub with
        `flwr supernode register`, give each hospital its own .key and ca.crt, and keep ca.key
        away from the coordinator. Private keys are written with mode 600. See the README's
        "Deployment" section for the commands that use them.
        """,
        """
        fedgan certs --out certs --hospitals 3 --host coordinator.example.org --host 10.0.0.5
        fedgan certs --out /tmp/loopback-certs --hospitals 2
        """,
    )
    certs.add_argument("--out", type=Path, required=True, help="folder to create")
    certs.add_argument(
        "--hospitals", type=int, required=True, help="SuperNode key pairs to make (hospital-0 .. hospital-N-1)"
    )
    certs.add_argument(
        "--host",
        action="append",
        dest="hosts",
        help="DNS name or IP address the SuperLink is reached at, repeatable (default: localhost and 127.0.0.1)",
    )
    certs.add_argument("--overwrite", action="store_true", help="replace a folder an earlier `fedgan certs` made")
    _add_common(certs, seed=False)

    demo = _command(
        sub,
        "demo",
        "run the product end to end on embedded procedural data",
        """
        Generate fundus photographs (EyePACS layout) and CT series (DICOM), prepare both into
        stores, show the partitions for 3/5/7/10 hospitals, pretrain the GAN on CT, fine-tune a
        grade-conditional GAN on fundus (64 px) centrally and across 3 simulated hospitals with
        Flower, evaluate both with the store's fixed evaluator and write an HTML report per run,
        a preview and a run record. About five minutes on a 2-core laptop; data already
        generated in DIR is reused.
        """,
        """
        fedgan demo
        fedgan demo --quick --out /tmp/fedgan-check
        fedgan demo --out runs/demo2 --fresh --seed 3
        """,
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder (default: runs/demo)")
    demo.add_argument("--fresh", action="store_true", help="regenerate the procedural data even if present")
    demo.add_argument(
        "--quick", action="store_true", help="small counts and 32 px: checks an installation in about a minute"
    )
    demo.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda (default: auto)")
    _add_common(demo, workers=True)
    return parser


def _add_algorithm_options(parser: argparse.ArgumentParser) -> None:
    """How hospitals are combined (`federate`; `sweep` takes a list of algorithms instead of --algorithm)."""
    defaults = AlgorithmConfig()
    group = parser.add_argument_group("algorithm (see docs/federation.md)")
    if parser.prog.endswith("federate"):
        group.add_argument(
            "--algorithm",
            default=defaults.name,
            choices=ALGORITHMS,
            help="fedavg (the paper's); fedavgm/fedadam/fedyogi: Flower's server optimisers; fedprox: proximal "
            "local training; mdgan: the generator at the server, a discriminator per hospital that never "
            f"leaves it (default: {defaults.name})",
        )
    group.add_argument(
        "--server-lr",
        type=float,
        default=defaults.server_lr,
        help="server step size of fedavgm/fedadam/fedyogi; 0: the algorithm's default, 1.0 or 3e-3 (default: 0)",
    )
    group.add_argument(
        "--server-momentum",
        type=float,
        default=defaults.server_momentum,
        help=f"fedavgm's momentum, fedadam/fedyogi's beta1 (default: {defaults.server_momentum})",
    )
    group.add_argument(
        "--proximal-mu",
        type=float,
        default=defaults.proximal_mu,
        help=f"fedprox: weight of the proximal term (default: {defaults.proximal_mu})",
    )
    group.add_argument(
        "--pack",
        type=int,
        default=defaults.pack,
        help=f"mdgan: generator steps whose images travel in one message exchange (default: {defaults.pack})",
    )
    group.add_argument(
        "--aggregation",
        default=defaults.aggregation,
        choices=AGGREGATIONS,
        help="fedavg: how replies combine; median, trimmed-mean (20 %% of each tail) and krum resist hostile "
        "updates small enough to pass the norm bound, and move an all-honest federation's model a little "
        f"(docs/federation.md) (default: {defaults.aggregation})",
    )
    group.add_argument(
        "--byzantine",
        type=int,
        default=defaults.byzantine,
        help=f"krum: how many hospitals may be hostile (default: {defaults.byzantine})",
    )


def _algorithm(args: argparse.Namespace, name: str) -> AlgorithmConfig:
    """The algorithm `name` with the flags' settings (a robust --aggregation applies to fedavg only)."""
    return AlgorithmConfig(
        name,
        args.server_lr,
        args.server_momentum,
        args.proximal_mu,
        args.pack,
        args.aggregation if name == "fedavg" else "mean",
        args.byzantine,
    )


def _add_gan_options(parser: argparse.ArgumentParser, *, epochs_help: str) -> None:
    """Model and local-training flags shared by `train` and `federate` (same loop, same model)."""
    parser.add_argument("--config", type=Path, help="TOML file with [model] and [train] tables")
    parser.add_argument("--conditional", action="store_true", help="condition both networks on the DR grade (0-4)")
    parser.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default=DEFAULT_RECIPE,
        help="small-data (default): DiffAugment, spectrally normalised D, hinge loss, EMA of G; paper: the paper's "
        "DCGAN exactly. Applied before --config and the flags below, which override it",
    )
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, help=epochs_help)
    group.add_argument("--batch-size", type=int, help="images per step (default: 64)")
    group.add_argument("--lr-generator", type=float, help="Adam learning rate of G (default: 1e-4; paper 2e-4)")
    group.add_argument("--lr-discriminator", type=float, help="Adam learning rate of D (default: 4e-4; paper 2e-4)")
    group.add_argument(
        "--real-label", type=float, help="target for real images; 0.9 is one-sided smoothing (default: 0.9)"
    )
    group.add_argument("--d-steps", type=int, help="discriminator updates per generator update (default: 1)")
    group.add_argument("--loss", choices=LOSSES, help="hinge or bce (the paper's) (default: hinge)")
    group.add_argument(
        "--augment",
        help=f"DiffAugment policy, comma-separated from {','.join(AUGMENTATIONS)}; '' for none (default: all three)",
    )
    group.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mirror half of the real images; a mirrored left eye is a right eye (default: on)",
    )
    group.add_argument(
        "--ema-decay",
        type=float,
        help="moving average of G used for samples and evaluation; 0 disables (default: 0.999)",
    )
    group.add_argument("--r1-gamma", type=float, help="R1 penalty weight on real images; 0 disables (default: 0)")
    group.add_argument(
        "--eval-every",
        type=int,
        help="steps between KID/FD evaluations on the store's fixed evaluator (train), or "
        "any value > 0 for one per round (federate); keeps checkpoints/best (default: 0, off)",
    )
    group.add_argument("--eval-count", type=int, help="generated images per in-training evaluation (default: 256)")
    group.add_argument(
        "--keep-checkpoints",
        type=int,
        help="newest epoch/round checkpoints to keep besides best.pt; 0 keeps all (default: 3)",
    )
    group = parser.add_argument_group(
        "differential privacy (DP-SGD on the discriminator; needs --no-spectral-norm --norm group)"
    )
    group.add_argument(
        "--dp-epsilon", type=float, help="target epsilon over the whole run; sets the noise (default: off)"
    )
    group.add_argument("--dp-noise", type=float, help="noise multiplier instead of a target epsilon (default: off)")
    group.add_argument("--dp-clip", type=float, help="per-sample gradient norm bound (default: 1.0)")
    group.add_argument("--dp-delta", type=float, help="delta of the guarantee, below 1/images (default: 1e-5)")
    group = parser.add_argument_group("model")
    group.add_argument("--latent-dim", type=int, help="size of z (default: 200)")
    group.add_argument("--generator-width", type=int, help="generator channels at 4x4 (default: 1024)")
    group.add_argument(
        "--discriminator-width", type=int, help="discriminator channels of its first block (default: 64)"
    )
    group.add_argument(
        "--norm", choices=NORMS, help="normalisation layers of G, and of D without spectral norm (default: batch)"
    )
    group.add_argument(
        "--spectral-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="spectrally normalised D without norm layers (default: on; the paper recipe turns it off)",
    )
    group.add_argument(
        "--upsample", choices=UPSAMPLES, help="G upsampling: transposed conv or resize + conv (default: transposed)"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N (default: auto)")


def _gan_configs(args: argparse.Namespace, **train_defaults: Any) -> tuple[Any, Any]:
    """(GANConfig, TrainConfig) from defaults, then --config [model]/[train], then flags."""
    import dataclasses

    from fedgan.config import TrainConfig, from_dict, load_toml_section
    from fedgan.models.dcgan import GANConfig
    from fedgan.training.recipes import apply_recipe

    train_fields = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("seed", "sample_count"))
    model_fields = ("latent_dim", "generator_width", "discriminator_width", "norm", "spectral_norm", "upsample")
    model, train = apply_recipe(args.recipe, GANConfig(), TrainConfig(**train_defaults, seed=args.seed))
    if args.config:
        model = from_dict(GANConfig, load_toml_section(args.config, "model"), base=model)
        train = from_dict(TrainConfig, load_toml_section(args.config, "train"), base=train)
    model = from_dict(GANConfig, _config_overrides(args, model_fields), base=model)
    train = from_dict(TrainConfig, _config_overrides(args, train_fields), base=train)
    return model, train


def _config_overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """Flags the user actually gave (argparse defaults are None), by config field name."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def run_synth(args: argparse.Namespace) -> None:
    from fedgan.data.sources.synth_sets import parse_grade_mix, write_ct_set, write_fundus_set

    if args.kind == "fundus":
        extra = {"grade_mix": parse_grade_mix(args.grade_mix)} if args.grade_mix else {}
        summary = write_fundus_set(
            args.out,
            count=args.count,
            size=args.size,
            seed=args.seed,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.quiet,
            **extra,
        )
        grades = ", ".join(f"grade {g}: {n}" for g, n in summary.per_grade.items())
        print(
            f"wrote {summary.images} fundus photographs to {summary.out} ({grades}) "
            f"in {summary.seconds:.1f} s, {summary.images_per_second:.1f} images/s"
        )
    else:
        summary = write_ct_set(
            args.out,
            patients=args.patients,
            slices=args.slices,
            size=args.size,
            seed=args.seed,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
        print(
            f"wrote {summary.images} CT slices ({args.patients} series) to {summary.out} "
            f"in {summary.seconds:.1f} s, {summary.images_per_second:.1f} slices/s"
        )


def run_prepare(args: argparse.Namespace) -> None:
    import dataclasses

    from fedgan.config import PreprocessConfig, StoreConfig, from_dict, load_toml_section
    from fedgan.data.prepare import prepare_store

    preprocess_fields = tuple(f.name for f in dataclasses.fields(PreprocessConfig))
    store_fields = ("shard_size", "compression", "heldout_fraction")
    preprocess = PreprocessConfig()
    store = StoreConfig(seed=args.seed)
    if args.config:
        preprocess = from_dict(PreprocessConfig, load_toml_section(args.config, "preprocess"))
        store = from_dict(StoreConfig, {"seed": args.seed, **load_toml_section(args.config, "store")})
    preprocess = from_dict(PreprocessConfig, _config_overrides(args, preprocess_fields), base=preprocess)
    store = from_dict(StoreConfig, _config_overrides(args, store_fields), base=store)
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


def run_inspect(args: argparse.Namespace) -> int:
    from fedgan.data.inspect import describe_store
    from fedgan.data.store import Store

    store = Store(args.store)
    print(describe_store(store, records=args.records))
    if args.verify:
        bad = store.verify()
        if bad:
            print(f"verify: {len(bad)} shard(s) differ from the manifest: {', '.join(bad)}")
            return 1
        print("verify: every shard matches its sha256")
    return 0


def run_partition(args: argparse.Namespace) -> None:
    from fedgan.data.partition import partition, partition_table
    from fedgan.data.store import Store

    labels = Store(args.store).labels("train")
    parts = partition(labels, args.clients, args.partition, args.seed, alpha=args.alpha)
    print(f"{args.partition} partition of the training split across {args.clients} hospitals (seed {args.seed}):")
    print(partition_table(labels, parts))


def _probe(store: Path, train: Any) -> Any:
    """The in-training quality probe when `--eval-every` asks for one (it needs the store's evaluator)."""
    if not train.eval_every:
        return None
    from fedgan.evaluation.probe import QualityProbe

    return QualityProbe.for_store(store, count=train.eval_count, seed=train.seed)


def run_train(args: argparse.Namespace) -> None:
    from fedgan.config import TrainConfig
    from fedgan.training.checkpoint import read_checkpoint
    from fedgan.training.device import resolve_device
    from fedgan.training.run import resume_centralised, run_store, train_centralised

    device = resolve_device(args.device)
    if args.resume:
        if args.store or args.out or args.init:
            raise FedGANError("--resume takes its store and settings from the run; drop --store/--out/--init")
        train = read_checkpoint(args.resume / "checkpoints" / "latest")["train_config"]
        probe = _probe(run_store(args.resume), TrainConfig(**train))
        state = resume_centralised(args.resume, epochs=args.epochs, device=device, progress=not args.quiet, probe=probe)
        run = args.resume
    else:
        if not args.store or not args.out:
            raise FedGANError("fedgan train needs --store and --out (or --resume RUN)")
        model, train = _gan_configs(args)
        state = train_centralised(
            args.store,
            args.out,
            model_config=model,
            train_config=train,
            conditional=args.conditional,
            init=args.init,
            device=device,
            progress=not args.quiet,
            probe=_probe(args.store, train),
        )
        run = args.out
    print(
        f"trained to epoch {state.epoch} ({state.step} steps) on {device}; samples in {run / 'samples'}, "
        f"checkpoint {run / 'checkpoints' / 'latest'}, losses in {run / 'metrics.jsonl'}"
    )


def run_federate(args: argparse.Namespace) -> None:
    from fedgan.federation.secure import SecAggSettings
    from fedgan.federation.server_app import ClientDP
    from fedgan.federation.simulate import completed_rounds, federate, resume_federation

    if args.device not in ("auto", "cpu"):
        raise FedGANError(
            "federate places hospitals itself (GPU shares when CUDA is present); --device applies to train"
        )
    if args.resume:
        if args.store or args.out or args.init or args.clients:
            raise FedGANError("--resume takes its store and settings from the run; drop --store/--out/--init/--clients")
        run = resume_federation(args.resume, rounds=args.rounds)
    else:
        if not args.store or not args.out or not args.clients:
            raise FedGANError("fedgan federate needs --store, --out and --clients (or --resume RUN)")
        model, train = _gan_configs(args, epochs=1)
        run = federate(
            args.store,
            args.out,
            clients=args.clients,
            partition_kind=args.partition,
            rounds=args.rounds or 2,
            model_config=model,
            train_config=train,
            conditional=args.conditional,
            init=args.init,
            alpha=args.alpha,
            fraction=args.fraction,
            weighting=args.weighting,
            min_successful=args.min_successful,
            client_cpus=args.client_cpus,
            secagg=SecAggSettings(clip=args.secagg_clip) if args.secagg else None,
            client_dp=ClientDP(args.client_dp_noise, args.client_dp_clip) if args.client_dp_noise is not None else None,
            algorithm=_algorithm(args, args.algorithm),
            round_timeout=args.round_timeout,
            disclose=tuple(d for d in args.disclose.split(",") if d),
        )
    done = completed_rounds(run)
    print(
        f"federated training completed {done} round{'s' if done != 1 else ''}; samples in {run / 'samples'}, "
        f"checkpoint {run / 'checkpoints' / 'latest'}, per-round metrics in {run / 'metrics.jsonl'}"
    )


def run_evaluate(args: argparse.Namespace) -> None:
    from fedgan.evaluation.evaluate import evaluate_run

    result = evaluate_run(
        args.run,
        args.real,
        count=args.count,
        reference=args.reference,
        seed=args.seed,
        inception_weights=args.inception_weights,
    )
    fidelity, grader = result["fidelity"], result["fidelity_grader"]
    print(
        f"evaluated {args.run} ({result['counts']['generated']} generated vs {result['counts']['real']} real, "
        f"evaluator {result['evaluator_sha256'][:12]}), in its structure space (headline) and grader space:"
    )
    for name, value in fidelity.items():
        other = grader[name]
        print(
            f"  {name:<14} {value['value']:.4g}  [{value['low']:.4g}, {value['high']:.4g}]"
            f"    grader {other['value']:.4g}  [{other['low']:.4g}, {other['high']:.4g}]"
        )
    synthetic = result["utility"]["synthetic_trained"]
    print(
        f"  utility: kappa {synthetic['kappa']:.3f} trained on synthetic"
        if "kappa" in synthetic
        else f"  utility: n/a ({synthetic['reason']})",
        f"vs {result['utility']['real_trained']['kappa']:.3f} trained on real",
    )
    if "paper_realism" in result:
        print(f"  paper realism score: {result['paper_realism']['value']:.3f}")
    if "fid" in result:
        print(f"  FID (Inception): {result['fid']['value']:.4g}")
    print(f"metrics in {Path(args.run) / 'eval' / 'metrics.json'}; `fedgan report {args.run}` shows them with the run")


def run_sample(args: argparse.Namespace) -> None:
    from fedgan.data.sources.synth_sets import parse_grade_mix
    from fedgan.synthetic import write_synthetic_set

    summary = write_synthetic_set(
        args.run,
        args.out,
        count=args.count,
        grade_mix=parse_grade_mix(args.grade_mix) if args.grade_mix else None,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    grades = (
        f" ({', '.join(f'grade {g}: {n}' for g, n in summary.per_grade.items())}, EyePACS layout)"
        if summary.per_grade
        else ""
    )
    print(f"wrote {summary.images} synthetic images to {summary.out}{grades}")


def run_audit(args: argparse.Namespace) -> None:
    from fedgan.evaluation.privacy import audit

    result = audit(
        args.run, args.members, args.non_members, samples=args.samples, reference=args.reference, seed=args.seed
    )
    for name, title in (("gan_leaks", "GAN-Leaks (black-box)"), ("logan", "LOGAN (white-box, discriminator)")):
        auc, tpr = result[name]["auc"], result[name]["tpr_at_1pct_fpr"]
        print(
            f"{title:<34} AUC {auc['value']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]  "
            f"TPR at 1% FPR {tpr['value']:.3f} [{tpr['low']:.3f}, {tpr['high']:.3f}]"
        )
    memo = result["memorisation"]
    print(
        f"memorisation: generated-to-train median distance {memo['generated_to_train']['median']:.3g} vs "
        "held-out-to-train "
        f"{memo['heldout_to_train']['median']:.3g} (ratio {memo['ratio_of_medians']:.2f}; well below 1 means copies)"
    )
    print(f"audit in {Path(args.run) / 'eval' / 'privacy.json'}")


def run_certs(args: argparse.Namespace) -> None:
    from fedgan.federation.certs import make_certificates

    made = make_certificates(
        args.out,
        hospitals=args.hospitals,
        hosts=tuple(args.hosts or ("localhost", "127.0.0.1")),
        overwrite=args.overwrite,
    )
    print(
        f"certificates for {', '.join(made.hosts)} and {made.hospitals} hospital key pairs in {made.folder}; "
        f"register each {made.folder / 'hospitals'}/hospital-N.pub with `flwr supernode register`"
    )


def run_report(args: argparse.Namespace) -> None:
    from fedgan.reporting.report import build_report

    print(f"report written to {build_report(args.run)}")


def run_sweep(args: argparse.Namespace) -> None:
    from fedgan.sweep import SweepSettings, format_table, run_sweep

    try:
        clients = tuple(int(c) for c in args.clients.split(","))
    except ValueError:
        raise FedGANError(f"--clients must be comma-separated integers, got {args.clients!r}") from None
    model, train = _gan_configs(args, epochs=1)
    settings = SweepSettings(
        args.store,
        args.out,
        clients,
        args.partition,
        args.rounds,
        model,
        train,
        args.conditional,
        args.init,
        args.count,
        tuple(_algorithm(args, name.strip()) for name in args.algorithms.split(",")),
    )
    rows = run_sweep(settings)
    print(format_table(rows))
    print(f"comparison in {args.out / 'report.html'} and {args.out / 'sweep.json'}")


def run_demo(args: argparse.Namespace) -> None:
    import dataclasses

    from fedgan.demo import QUICK, DemoConfig
    from fedgan.demo import run_demo as demo
    from fedgan.training.device import resolve_device

    config = dataclasses.replace(QUICK if args.quick else DemoConfig(), seed=args.seed)
    print(
        demo(
            args.out,
            config=config,
            fresh=args.fresh,
            workers=args.workers,
            progress=not args.quiet,
            device=resolve_device(args.device),
        )
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="fedgan: %(message)s")
    logging.getLogger("flwr").propagate = False  # Flower prints its own lines; through ours they would appear twice
    if getattr(args, "quiet", False):  # Flower logs every round at INFO and resets its level when it starts
        logging.getLogger("flwr").addFilter(lambda record: record.levelno >= logging.WARNING)
    handlers = {
        "synth": run_synth,
        "prepare": run_prepare,
        "inspect": run_inspect,
        "partition": run_partition,
        "train": run_train,
        "federate": run_federate,
        "evaluate": run_evaluate,
        "sample": run_sample,
        "audit": run_audit,
        "report": run_report,
        "sweep": run_sweep,
        "demo": run_demo,
        "certs": run_certs,
    }
    try:
        return handlers[args.command](args) or 0
    except FedGANError as exc:
        print(f"fedgan: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fedgan: interrupted; no partial output was kept", file=sys.stderr)
        return 130
