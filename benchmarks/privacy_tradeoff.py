"""Fidelity, utility and membership-inference AUC with and without differential privacy, in one run.

On procedural fundus data (small, so it runs on a CPU in minutes): centralised training without
DP and with DP-SGD at two epsilons, and 3- and 10-hospital federations without DP, all with the
same seed, model (group norm, which DP needs) and budget. Each is evaluated with the store's
fixed evaluator and audited (members: the training split; non-members: the held-out split).

    python benchmarks/privacy_tradeoff.py [--images 400] [--size 32] [--epochs 6] [--epsilons 10,3]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from fedgan.config import GANConfig, PreprocessConfig, StoreConfig, TrainConfig
from fedgan.data.prepare import prepare_store
from fedgan.data.sources.synth_sets import write_fundus_set
from fedgan.evaluation.evaluate import evaluate_run
from fedgan.evaluation.privacy import audit
from fedgan.federation.simulate import federate
from fedgan.training.run import train_centralised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument(
        "--epochs", type=int, default=6, help="centralised epochs = federated rounds (1 local epoch each)"
    )
    parser.add_argument("--epsilons", default="10,3")
    args = parser.parse_args()
    model = GANConfig(generator_width=128, discriminator_width=32, norm="group")
    base = TrainConfig(epochs=args.epochs, batch_size=16, dp_delta=1e-3)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_fundus_set(
            root / "raw", count=args.images, size=256, grade_mix=(0.4, 0.15, 0.15, 0.15, 0.15), progress=False
        )
        store = root / "store"
        prepare_store(
            root / "raw",
            store,
            preprocess_config=PreprocessConfig(size=args.size),
            store_config=StoreConfig(heldout_fraction=0.3),
            progress=False,
        )
        members: list[tuple[str, Path]] = []
        for eps in [0.0, *(float(e) for e in args.epsilons.split(","))]:
            run = root / f"central-eps{eps:g}"
            train_centralised(
                store,
                run,
                model_config=model,
                train_config=dataclasses.replace(base, dp_epsilon=eps),
                conditional=True,
                progress=False,
            )
            members.append((f"centralised, {'no DP' if not eps else f'epsilon {eps:g}'}", run))
        for clients in (3, 10):
            run = root / f"fed{clients}"
            federate(
                store,
                run,
                clients=clients,
                partition_kind="label-split",
                rounds=args.epochs,
                model_config=model,
                train_config=dataclasses.replace(base, epochs=1),
                conditional=True,
            )
            members.append((f"{clients} hospitals, no DP", run))
        for name, run in members:
            result = evaluate_run(run, store, reference=members[0][1])
            attack = audit(run, store, Path(f"{store}:heldout"), samples=500)
            rows.append(
                (
                    name,
                    result["fidelity"]["fd"]["value"],
                    result["fidelity"]["precision"]["value"],
                    result["utility"]["synthetic_trained"]["kappa"],
                    attack["logan"]["auc"],
                    attack["gan_leaks"]["auc"],
                )
            )
    print(
        f"{'run':<26} {'FD':>8} {'precision':>9} {'TSTR kappa':>10}  {'LOGAN AUC (95%)':<22} "
        f"{'GAN-Leaks AUC (95%)':<22}"
    )
    for name, fd, precision, kappa, logan, leaks in rows:
        print(
            f"{name:<26} {fd:>8.4g} {precision:>9.2f} {kappa:>10.2f}  "
            f"{logan['value']:.2f} [{logan['low']:.2f}, {logan['high']:.2f}]      {leaks['value']:.2f} "
            f"[{leaks['low']:.2f}, {leaks['high']:.2f}]"
        )


if __name__ == "__main__":
    main()
