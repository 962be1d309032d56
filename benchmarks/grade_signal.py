"""Does the DR grade survive the default preprocessing? Train a small CNN on procedural images.

Generates `--train + --test` fundus photographs (EyePACS layout, screening grade mix), prepares
them with the default pipeline (128 px grayscale, CLAHE, gamma, binning) with the test images as
the store's stratified held-out split, trains `fedgan.evaluation.grader.GradeNet` on the training
split and prints quadratic weighted kappa and accuracy on the held-out split. Goal: kappa >= 0.7
with 2,000 training and 500 test images.

    python benchmarks/grade_signal.py [--train 2000] [--test 500] [--epochs 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedgan.config import PreprocessConfig, StoreConfig
from fedgan.data.prepare import prepare_store
from fedgan.data.sources.synth_sets import write_fundus_set
from fedgan.data.store import Store
from fedgan.evaluation.grader import GraderTraining, predict_grades, train_grader
from fedgan.evaluation.kappa import quadratic_weighted_kappa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--photo-size", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        made = write_fundus_set(
            Path(tmp) / "raw", count=args.train + args.test, size=args.photo_size, seed=args.seed, progress=False
        )
        generated = time.perf_counter()
        store_config = StoreConfig(heldout_fraction=args.test / (args.train + args.test), seed=args.seed)
        prepare_store(
            Path(tmp) / "raw",
            Path(tmp) / "store",
            preprocess_config=PreprocessConfig(size=args.image_size),
            store_config=store_config,
            progress=False,
        )
        store = Store(Path(tmp) / "store")
        x_train, y_train = store.load("train")
        x_test, y_test = store.load("heldout")
        prepared = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = train_grader(x_train, y_train, GraderTraining(epochs=args.epochs, seed=args.seed))
    trained = time.perf_counter()
    predicted = predict_grades(model, x_test)
    kappa = quadratic_weighted_kappa(y_test, predicted)
    confusion = np.zeros((5, 5), int)
    np.add.at(confusion, (y_test, predicted), 1)
    print(
        f"generated {made.images} photographs ({args.photo_size} px) in {generated - started:.0f} s "
        f"({made.images_per_second:.1f} images/s); prepared in {prepared - generated:.0f} s; trained in "
        f"{trained - prepared:.0f} s"
    )
    print(
        f"train {len(y_train)} per grade {np.bincount(y_train, minlength=5).tolist()}; test {len(y_test)} per grade "
        f"{np.bincount(y_test, minlength=5).tolist()}"
    )
    print("confusion (rows: true grade, columns: predicted)")
    print(confusion)
    print(f"accuracy {np.mean(predicted == y_test):.3f}")
    print(f"quadratic weighted kappa {kappa:.3f} (goal >= 0.70)")


if __name__ == "__main__":
    main()
