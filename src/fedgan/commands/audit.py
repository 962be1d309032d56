"""`fedgan audit`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedgan.commands.common import add_common, add_model_check, check_model, command


def add_parser(sub: Any) -> None:
    audit = command(
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
    add_model_check(audit)
    add_common(audit)
    audit.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    check_model(args.run, args.model)
    from fedgan.evaluation.privacy import ATTACKS, audit

    result = audit(
        args.run, args.members, args.non_members, samples=args.samples, reference=args.reference, seed=args.seed
    )
    for name, title in ATTACKS.items():
        if name not in result:  # one white-box attack per kind of model
            continue
        auc, tpr = result[name]["auc"], result[name]["tpr_at_1pct_fpr"]
        print(
            f"{title:<42} AUC {auc['value']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]  "
            f"TPR at 1% FPR {tpr['value']:.3f} [{tpr['low']:.3f}, {tpr['high']:.3f}]"
        )
    memo = result["memorisation"]
    print(
        f"memorisation: generated-to-train median distance {memo['generated_to_train']['median']:.3g} vs "
        "held-out-to-train "
        f"{memo['heldout_to_train']['median']:.3g} (ratio {memo['ratio_of_medians']:.2f}; well below 1 means copies)"
    )
    print(f"audit in {Path(args.run) / 'eval' / 'privacy.json'}")
