"""`fedgan demo`: the whole product on the embedded procedural data, in minutes on a laptop CPU.

Writes a fundus set in the EyePACS layout and a CT set as DICOM series, prepares both into
stores with the real readers and pipeline, prints the partitions a federation would use, trains
a grade-conditional GAN on the fundus store both centrally and across simulated hospitals with
Flower, evaluates both with the store's fixed evaluator and writes an HTML report per run, a
preview and a run record.

Both fundus runs start from a fresh model, not from the paper's CT pretraining: at the demo's
size a CT phase is a few optimiser steps on 96 slices, and starting from it measured worse, most
of all in the federation (docs/recipe.md, "The demo starts fresh"). The CT store is still
prepared, so the paper's two phases are one `fedgan train` away (the summary's last line).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch

from fedgan.config import AlgorithmConfig, GANConfig, PreprocessConfig, StoreConfig, TrainConfig, to_dict
from fedgan.data.inspect import describe_store
from fedgan.data.partition import partition, partition_table
from fedgan.data.prepare import prepare_store
from fedgan.data.sources.synth_sets import write_ct_set, write_fundus_set
from fedgan.data.store import Store
from fedgan.evaluation.evaluate import evaluate_run
from fedgan.evaluation.probe import QualityProbe
from fedgan.evaluation.results import headline
from fedgan.federation.simulate import federate
from fedgan.provenance import write_run_record
from fedgan.reporting.report import build_report
from fedgan.runfolder import GRADE_KAPPA, KID, ROUND, STEP, RunFolder
from fedgan.training.recipes import apply_recipe
from fedgan.training.run import train_centralised

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    fundus_count: int = 2000  # 700 train (every grade reaches 10 hospitals) + 1300 held out for the evaluator only
    fundus_size: int = 256  # source photographs (EyePACS's are ~3000 px): 4x what the GAN sees, 2x faster than 384
    heldout_fraction: float = 0.65  # half makes the fixed evaluator, half tests the graders: 650 each, never trained on
    ct_patients: int = 4
    ct_slices: int = 24
    ct_size: int = 256
    image_size: int = 64  # preprocessed size: 64 px is what a 2-core CPU trains at usefully (128 is the full setting)
    train_epochs: int = 36  # GAN epochs on the fundus store (43 steps each): ~4.5 minutes
    generator_width: int = 256  # a quarter of the paper's widths: ~8x fewer FLOPs, so a CPU shows anatomy in minutes
    discriminator_width: int = 32
    batch_size: int = 16  # both stages (the federation's generator steps too): 2x the steps of 32, ~1.1x the time
    recipe: str = "graded"  # both stages: the grade head makes the grade rows differ at no KID cost (docs/recipe.md)
    eval_every: int = 129  # steps between in-training KIDs: every 3 epochs, so one falls on the federation's 9
    sample_count: int = 50  # 10 per grade in every grid
    hospitals: int = 3  # the federated part: label-split across this many simulated hospitals
    algorithm: str = "mdgan"  # G at the server, a D per hospital: the best under label skew (docs/federation.md)
    rounds: int = 3  # 9 epochs: each round of 3 epochs costs ~45 s, which the demo's 10 minutes do not hold
    local_epochs: int = 3
    eval_draws: int = 5  # generated sets behind the final evaluation's intervals (the library's default is 10)
    seed: int = 0


#: `fedgan demo --quick`: the same path at small counts, a smoke test of an installation
QUICK = DemoConfig(
    fundus_count=400,
    fundus_size=256,
    heldout_fraction=0.5,
    ct_patients=2,
    ct_slices=8,
    ct_size=128,
    image_size=32,
    train_epochs=2,
    generator_width=64,
    discriminator_width=16,
    eval_every=5,
    rounds=2,
    local_epochs=1,
    batch_size=32,
)


def preview_grid(fundus_root: Path, store: Store, per_grade: int = 4) -> np.ndarray:
    """Rows of (photograph, preprocessed) pairs, one row per grade present, as a BGR image."""
    tile = 128
    rows = []
    entries = store.entries("train")
    picked = sorted(
        i
        for grade in sorted({e["label"] for e in entries})
        for i in [k for k, e in enumerate(entries) if e["label"] == grade][:per_grade]
    )  # load() returns index order
    images = dict(zip((entries[i]["id"] for i in picked), store.load("train", np.array(picked))[0], strict=True))
    for grade in sorted({e["label"] for e in entries}):
        cells = []
        for entry in (entries[i] for i in picked if entries[i]["label"] == grade):
            photo = cv2.imread(str(fundus_root / entry["source"]))
            photo = cv2.resize(photo, (tile * photo.shape[1] // photo.shape[0], tile), interpolation=cv2.INTER_AREA)
            photo = photo[:, (photo.shape[1] - tile) // 2 : (photo.shape[1] - tile) // 2 + tile]
            processed = ((images[entry["id"]][0] + 1) * 127.5).astype(np.uint8)
            processed = cv2.cvtColor(
                cv2.resize(processed, (tile, tile), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR
            )
            cells += [photo, processed]
        cells += [np.zeros((tile, tile, 3), np.uint8)] * (2 * per_grade - len(cells))
        label = np.zeros((tile, 90, 3), np.uint8)
        cv2.putText(
            label, f"grade {grade}", (4, tile // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA
        )
        rows.append(np.concatenate([label, *cells], axis=1))
    return np.concatenate(rows, axis=0)


def same_epochs(central_curve: list[dict], steps_per_epoch: int, federated_epochs: int, federated_kid: float) -> str:
    """The centralised run's KID after as many epochs as the federation trained, and the ratio.

    Why: the demo's budget gives the federation fewer epochs than centralised training (mdgan's
    hospitals take turns on one machine), so its final KID alone would compare unequal budgets.
    """
    target = steps_per_epoch * federated_epochs
    before = [r for r in central_curve if r[STEP] <= target]
    if not before:
        return f"(the centralised run was not evaluated within its first {federated_epochs} epochs)"
    point = before[-1]
    epoch = point[STEP] // max(steps_per_epoch, 1)
    nearest = "" if point[STEP] == target else f" (its nearest evaluation before: epoch {epoch})"
    return (
        f"equal budget: after the federation's {federated_epochs} epochs, the centralised run had KID "
        f"{point[KID]:.3g}{nearest}: federated / centralised KID at equal epochs {federated_kid / point[KID]:.2f}"
    )


def raw_data(
    out: Path, config: DemoConfig, *, fresh: bool, workers: int | None, progress: bool
) -> tuple[Path, Path, list[str]]:
    """The demo's photographs and CT series under `out/data`, written unless already there (or
    `fresh`): generating them is the slow part a second `fedgan demo` need not repeat. Returns
    their folders and the summary's lines about them."""
    lines = []
    fundus_raw, ct_raw = out / "data" / "eyepacs", out / "data" / "rsna-ct"
    if fresh or not (fundus_raw / "trainLabels.csv").is_file():
        made = write_fundus_set(
            fundus_raw,
            count=config.fundus_count,
            size=config.fundus_size,
            seed=config.seed,
            workers=workers,
            overwrite=True,
            progress=progress,
        )
        lines.append(
            f"wrote {made.images} procedural fundus photographs ({config.fundus_size} px, EyePACS layout) to "
            f"{fundus_raw} at {made.images_per_second:.1f} images/s"
        )
    else:
        lines.append(f"reused the fundus photographs in {fundus_raw} (pass --fresh to regenerate)")
    if fresh or not ct_raw.is_dir():
        made = write_ct_set(
            ct_raw,
            patients=config.ct_patients,
            slices=config.ct_slices,
            size=config.ct_size,
            seed=config.seed,
            workers=workers,
            overwrite=True,
            progress=progress,
        )
        lines.append(
            f"wrote {made.images} procedural CT slices as DICOM ({config.ct_patients} patients) to {ct_raw} at "
            f"{made.images_per_second:.1f} slices/s"
        )
    else:
        lines.append(f"reused the CT series in {ct_raw}")
    return fundus_raw, ct_raw, lines


def run_demo(
    out: Path,
    *,
    config: DemoConfig = DemoConfig(),
    fresh: bool = False,
    workers: int | None = None,
    progress: bool = True,
    device: torch.device = torch.device("cpu"),
) -> str:
    """Run the demo into `out`; returns the summary that is also saved as `out/summary.txt`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fundus_raw, ct_raw, lines = raw_data(out, config, fresh=fresh, workers=workers, progress=progress)
    preprocess = PreprocessConfig(size=config.image_size)
    store_config = StoreConfig(seed=config.seed, heldout_fraction=config.heldout_fraction)
    stores = {"fundus": out / "stores" / "fundus", "ct": out / "stores" / "ct"}
    for name, raw in (("fundus", fundus_raw), ("ct", ct_raw)):
        summary = prepare_store(
            raw,
            stores[name],
            preprocess_config=preprocess,
            store_config=store_config,
            workers=workers,
            overwrite=True,
            progress=progress,
        )
        lines.append(
            f"prepared {name}: {summary.written['train']} train + {summary.written['heldout']} held-out images "
            f"({summary.layout} layout, {len(summary.skipped)} skipped) into {stores[name]} at "
            f"{summary.images_per_second:.0f} images/s"
        )
    fundus = Store(stores["fundus"])
    lines += ["", describe_store(fundus), ""]
    labels = fundus.labels("train")
    for clients in (3, 5, 7, 10):
        parts = partition(labels, clients, "label-split", config.seed)
        lines += [
            f"label-split across {clients} hospitals (the paper's non-IID setting):",
            partition_table(labels, parts),
            "",
        ]
    runs = {
        "train": out / "runs" / "fundus-conditional",
        "federated": out / "runs" / f"federated-{config.hospitals}",
    }
    for run in runs.values():
        shutil.rmtree(run, ignore_errors=True)  # the demo retrains from scratch every time
    model_config, train_config = apply_recipe(
        config.recipe,
        GANConfig(generator_width=config.generator_width, discriminator_width=config.discriminator_width),
        TrainConfig(seed=config.seed, batch_size=config.batch_size, sample_count=config.sample_count),
    )
    lines.append(
        f"the fixed evaluator is made from {len(fundus.labels('heldout')) // 2} held-out photographs generated for "
        "evaluation only "
        "(no GAN trains on them); the other half tests the graders"
    )
    probe = QualityProbe.for_store(stores["fundus"], seed=config.seed)
    trained = train_centralised(
        stores["fundus"],
        runs["train"],
        model_config=model_config,
        conditional=True,
        device=device,
        progress=progress,
        train_config=dataclasses.replace(train_config, epochs=config.train_epochs, eval_every=config.eval_every),
        probe=probe,
    )
    central_curve = RunFolder(runs["train"]).quality()
    lines.append(
        f"trained a grade-conditional GAN on fundus with the {config.recipe} recipe for {trained.epoch} epochs "
        f"({trained.step} steps of {config.batch_size}) on {device}, "
        f"from a fresh model; KID (structure) while training: "
        + ", ".join(f"step {r[STEP]}: {r[KID]:.3g}" for r in central_curve)
        + f"; sample grids (one row per grade 0-4) in {runs['train'] / 'samples'}"
    )
    lines.append(
        "grade kappa while training (a grader trained on the real training images, reading the grades the generated "
        "images were asked for; 0 is chance, real images score the real-trained grader's kappa below): "
        + ", ".join(f"step {r[STEP]}: {r[GRADE_KAPPA]:.2f}" for r in central_curve if GRADE_KAPPA in r)
    )
    federate(
        stores["fundus"],
        runs["federated"],
        clients=config.hospitals,
        partition_kind="label-split",
        rounds=config.rounds,
        model_config=model_config,
        train_config=dataclasses.replace(train_config, epochs=config.local_epochs, eval_every=1),
        conditional=True,
        algorithm=AlgorithmConfig(config.algorithm),
    )
    rounds = RunFolder(runs["federated"]).quality()
    curve = ", ".join(
        f"round {r[ROUND]}: KID {r[KID]:.3g}" + (f" (grade kappa {r[GRADE_KAPPA]:.2f})" if GRADE_KAPPA in r else "")
        for r in rounds
    )
    lines.append(
        f"federated the same model across {config.hospitals} simulated hospitals with Flower ({config.algorithm}, "
        "label-split, "
        f"{config.local_epochs} epochs per round, generator steps of {config.batch_size}, from a fresh model): "
        f"{curve}; {runs['federated']}"
    )
    federated_epochs = config.rounds * config.local_epochs
    lines.append(same_epochs(central_curve, trained.step // max(trained.epoch, 1), federated_epochs, rounds[-1][KID]))
    same_grid = RunFolder(runs["train"]).sample_grid("epoch", federated_epochs)
    if same_grid.exists():  # the final grids compare 9 epochs with 36; these two compare like with like
        lines.append(
            f"grids at equal epochs: {RunFolder(runs['federated']).sample_grid('round', config.rounds)} (federated) "
            f"and {same_grid} (centralised)"
        )
    lines += [
        "",
        "evaluation with the fundus store's fixed evaluator: FD, precision and recall in its structure space (layout, "
        "sharpness, vessels, artefacts; the headline), KID also in its grader space (lesions);",
        f"realism (paper) uses one reference discriminator for both: the centrally trained one ({runs['train']})",
    ]
    for name in ("train", "federated"):
        result = evaluate_run(
            runs[name], stores["fundus"], reference=runs["train"], seed=config.seed, draws=config.eval_draws
        )
        lines.append(f"  {runs[name].name:<22} {headline(result)}")
    for run in runs.values():
        lines.append(f"report: {build_report(run)}")
    widths = f" --generator-width {config.generator_width} --discriminator-width {config.discriminator_width}"
    preview = out / "preview.png"
    cv2.imwrite(str(preview), preview_grid(fundus_raw, fundus))
    record = write_run_record(
        out,
        seed=config.seed,
        stores=stores,
        config={
            "demo": to_dict(config),
            "preprocess": to_dict(preprocess),
            "store": to_dict(store_config),
            "model": to_dict(model_config),
            "train": to_dict(train_config),
        },
    )
    lines += [
        f"preview of photographs and their preprocessed versions: {preview}",
        f"run record (seed, config, versions, data hashes): {record}",
        f"the paper's two phases: `fedgan train --store {stores['ct']} --out CT_RUN{widths}` (pretraining on CT), "
        f"then `fedgan train --store {stores['fundus']} --init CT_RUN/checkpoints/latest --conditional{widths} ...`; "
        "the runs above start fresh, because a CT phase of the demo's size measured worse (docs/recipe.md)",
        "next: `fedgan federate ... --secagg` (secure aggregation), `fedgan sweep` (3/5/7/10 hospitals vs "
        "centralised), "
        "README 'Deployment' (real SuperLink and SuperNodes)",
    ]
    text = "\n".join(lines)
    (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    return text
