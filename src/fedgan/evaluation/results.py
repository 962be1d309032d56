"""What `fedgan evaluate` writes to RUN/eval/metrics.json, and its one-line headline.

Why a module of its own: the evaluation writes these keys, and the report, the sweep, the demo
and the CLI read them; a renamed key must fail in one place, not silently in four.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedgan.runfolder import RunFolder

FIDELITY = "fidelity"  # {metric: {"value", "low", "high"}} in the evaluator's structure space (the headline)
FIDELITY_GRADER = "fidelity_grader"  # the same in the grader's feature space
FIDELITY_PER_GRADE = "fidelity_per_grade"
UTILITY = "utility"  # {"synthetic_trained": scores, "real_trained": scores, ...}
SYNTHETIC_TRAINED = "synthetic_trained"
REAL_TRAINED = "real_trained"
PAPER_REALISM = "paper_realism"  # {"value", "reference"}
FID = "fid"  # only with --inception-weights
VALUE = "value"


def result_path(run: Path) -> Path:
    """RUN/eval/metrics.json; beside the file, for a release or a checkpoint file evaluated on its own."""
    run = Path(run)
    return run.with_name(f"{run.stem}.metrics.json") if run.is_file() else RunFolder(run).evaluation / "metrics.json"


def read_result(run: Path) -> dict[str, Any] | None:
    path = result_path(run)
    return json.loads(path.read_text()) if path.exists() else None


def headline(result: dict[str, Any]) -> str:
    """FD with its interval, precision, recall, KID in both spaces, the paper's realism and the
    graders' kappa: what a person compares runs by."""
    fidelity, grader = result[FIDELITY], result[FIDELITY_GRADER]
    synthetic, real = result[UTILITY][SYNTHETIC_TRAINED], result[UTILITY][REAL_TRAINED]
    parts = [
        f"FD {fidelity['fd'][VALUE]:.3g} [{fidelity['fd']['low']:.3g}, {fidelity['fd']['high']:.3g}]",
        f"precision {fidelity['precision'][VALUE]:.2f}",
        f"recall {fidelity['recall'][VALUE]:.2f}",
        f"KID {fidelity['kid'][VALUE]:.3g} (grader space {grader['kid'][VALUE]:.3g})",
    ]
    if PAPER_REALISM in result:
        parts.append(f"realism (paper) {result[PAPER_REALISM][VALUE]:.3f}")
    trained_on_synthetic = f"{synthetic['kappa']:.2f}" if "kappa" in synthetic else "n/a"
    parts.append(f"grader kappa: synthetic-trained {trained_on_synthetic}, real-trained {real['kappa']:.2f}")
    return "  ".join(parts)
