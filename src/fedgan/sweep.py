"""`fedgan sweep`: the paper's comparison — a centralised baseline and each federation size,
for each federated algorithm and each kind of model asked for.

Every member of a model trains from the same seed (and `--init`) with the same budget: the
centralised run trains `rounds x local_epochs` epochs, each federation `rounds` rounds of
`local_epochs` local epochs, so every training image is seen equally often. Every member is then
evaluated with the store's one fixed evaluator, and the paper's realism score uses one reference
discriminator for all: the centralised GAN's final one, which judges a DDPM's images too (a sweep
without a GAN has no realism score). A member's ratios are to its own model's centralised run.

```
DIR/centralised/, DIR/clients-3/, ...   run folders (each with eval/metrics.json and report.html);
                                        DIR/mdgan-clients-3/, ... for algorithms other than fedavg;
                                        DIR/ddpm-centralised/, DIR/ddpm-clients-3/, ... for the DDPM
DIR/sweep.json                          the comparison table as data
DIR/report.html                         the comparison table and each member's final samples
```

Resumable: a member whose run reached its last round and has an evaluation with the current
evaluator is not run again; a member stopped midway resumes from its last checkpoint.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import logging
from pathlib import Path
from typing import Any

from fedgan.atomic import write_text_atomic
from fedgan.config import FEDERATION, PAPER_SIZES, SWEEP_ROUNDS, AlgorithmConfig, GANConfig, ModelConfig, TrainConfig
from fedgan.evaluation.evaluate import evaluate_run
from fedgan.evaluation.evaluator import load_evaluator
from fedgan.evaluation.results import (
    FIDELITY,
    PAPER_REALISM,
    REAL_TRAINED,
    SYNTHETIC_TRAINED,
    UTILITY,
    VALUE,
    read_result,
)
from fedgan.federation.simulate import federate, resume_federation
from fedgan.reporting.report import STYLE, build_report, img, table
from fedgan.runfolder import RunFolder
from fedgan.training.checkpoint import read_checkpoint
from fedgan.training.run import resume_centralised, train_centralised

log = logging.getLogger(__name__)

CENTRALISED = "centralised"
#: columns of the comparison: (key in a member's row, heading, lower is better)
COLUMNS = (
    ("paper_realism", "realism (paper)", False),
    ("fd", "FD", True),
    ("kid", "KID", True),
    ("precision", "precision", False),
    ("recall", "recall", False),
    ("coverage", "coverage", False),
    ("tstr_kappa", "TSTR kappa", False),
)


@dataclasses.dataclass(frozen=True)
class SweptModel:
    """One kind of model in a sweep, with the training settings of its recipe."""

    model_config: ModelConfig = GANConfig()
    train_config: TrainConfig = TrainConfig(epochs=FEDERATION.local_epochs)  # `epochs` = local epochs per round

    @property
    def prefix(self) -> str:
        """Its members' name prefix: none for the GAN (the paper's sweep), `ddpm-` for the DDPM."""
        return "" if self.model_config.kind == "gan" else f"{self.model_config.kind}-"


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    store: Path
    out: Path
    clients: tuple[int, ...] = PAPER_SIZES
    partition: str = FEDERATION.partition
    rounds: int = SWEEP_ROUNDS
    models: tuple[SweptModel, ...] = (SweptModel(),)  # every one trains the same members
    conditional: bool = False  # True: grade-conditional, which TSTR utility needs
    init: Path | None = None
    count: int | None = None  # generated images per evaluation (default: as many as real training images)
    algorithms: tuple[AlgorithmConfig, ...] = (AlgorithmConfig(),)


def member_name(algorithm: str, clients: int, prefix: str = "") -> str:
    """`clients-3` for FedAvg (the paper's sweep), `mdgan-clients-3` for another algorithm; the DDPM's start `ddpm-`."""
    return prefix + (f"clients-{clients}" if algorithm == "fedavg" else f"{algorithm}-clients-{clients}")


def finished(run: Path, target: int, key: str) -> bool:
    if not RunFolder(run).has_run():
        return False
    data = read_checkpoint(run)
    return int(data["extra"]["round"] if key == "round" else data["epoch"]) >= target


def train_member(
    settings: SweepSettings, model: SweptModel, name: str, clients: int, algorithm: AlgorithmConfig
) -> Path:
    run = settings.out / name
    epochs = model.train_config.epochs
    if name == model.prefix + CENTRALISED:
        total = settings.rounds * epochs
        if finished(run, total, "epoch"):
            return run
        if RunFolder(run).has_run():
            resume_centralised(run, epochs=total, progress=False)
        else:
            train_centralised(
                settings.store,
                run,
                model_config=model.model_config,
                conditional=settings.conditional,
                init=settings.init,
                train_config=dataclasses.replace(model.train_config, epochs=total),
                progress=False,
            )
        return run
    if finished(run, settings.rounds, "round"):
        return run
    if RunFolder(run).has_run():
        resume_federation(run, rounds=settings.rounds)
    else:
        federate(
            settings.store,
            run,
            clients=clients,
            partition_kind=settings.partition,
            rounds=settings.rounds,
            model_config=model.model_config,
            train_config=model.train_config,
            conditional=settings.conditional,
            init=settings.init,
            algorithm=algorithm,
        )
    return run


def evaluate_member(
    settings: SweepSettings, model: SweptModel, run: Path, reference: Path | None, evaluator_sha256: str
) -> dict[str, Any]:
    saved = read_result(run)
    if (
        saved is not None
        and saved.get("evaluator_sha256") == evaluator_sha256
        and (reference is None or PAPER_REALISM in saved)
    ):
        return saved
    return evaluate_run(run, settings.store, count=settings.count, reference=reference, seed=model.train_config.seed)


def row(name: str, model: str, clients: int, algorithm: str, result: dict[str, Any]) -> dict[str, Any]:
    fidelity = result[FIDELITY]
    synthetic = result[UTILITY][SYNTHETIC_TRAINED]
    return {
        "member": name,
        "model": model,
        "clients": clients,
        "algorithm": algorithm,
        "paper_realism": result[PAPER_REALISM][VALUE] if PAPER_REALISM in result else None,
        **{key: fidelity[key][VALUE] for key in ("fd", "kid", "precision", "recall", "coverage")},
        "fd_interval": [fidelity["fd"]["low"], fidelity["fd"]["high"]],
        "tstr_kappa": synthetic.get("kappa"),
        "real_kappa": result[UTILITY][REAL_TRAINED]["kappa"],
    }


def relative(rows: list[dict[str, Any]]) -> None:
    """Add each metric as a fraction of its model's centralised baseline's (`<key>_vs_centralised`),
    where that baseline is above 0: a fraction of a kappa at or below chance, or of a KID that
    sampling error took below 0, would read as a gain or a loss that is neither."""
    bases = {r["model"]: r for r in rows if not r["algorithm"]}  # the centralised rows
    for r in rows:
        base = bases[r["model"]]
        for key, _, _ in COLUMNS:
            usable = r[key] is not None and base[key] is not None and base[key] > 0
            r[f"{key}_vs_centralised"] = r[key] / base[key] if usable else None


def run_sweep(settings: SweepSettings) -> list[dict[str, Any]]:
    settings.out.mkdir(parents=True, exist_ok=True)
    evaluator = load_evaluator(settings.store)
    # the GAN goes first: its centralised discriminator is every member's realism reference
    models = sorted(settings.models, key=lambda m: m.model_config.kind != "gan")
    members = [
        (model, member, clients, algorithm)
        for model in models
        for member, clients, algorithm in (
            (model.prefix + CENTRALISED, 1, AlgorithmConfig()),
            *((member_name(a.name, n, model.prefix), n, a) for n in settings.clients for a in settings.algorithms),
        )
    ]
    rows = []
    reference = settings.out / CENTRALISED if models[0].model_config.kind == "gan" else None
    for model, name, clients, algorithm in members:
        log.info("sweep member %s", name)
        run = train_member(settings, model, name, clients, algorithm)
        result = evaluate_member(settings, model, run, reference, evaluator.sha256)
        build_report(run)
        rows.append(row(name, model.model_config.kind, clients, "" if clients == 1 else algorithm.name, result))
    relative(rows)
    write_text_atomic(
        settings.out / "sweep.json",
        json.dumps(
            {
                "evaluator_sha256": evaluator.sha256,
                "rounds": settings.rounds,
                "local_epochs": settings.models[0].train_config.epochs,
                "rows": rows,
            },
            indent=2,
        ),
    )
    write_text_atomic(settings.out / "report.html", comparison_page(settings, rows))
    return rows


def fmt_cell(value: float | None, ratio: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" + (f" ({ratio:.2f}×)" if ratio is not None else "")


def comparison_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    header = ["member", "hospitals", *(heading + (" ↓" if lower else " ↑") for _, heading, lower in COLUMNS)]
    body = [
        [r["member"], r["clients"], *(fmt_cell(r[key], r[f"{key}_vs_centralised"]) for key, _, _ in COLUMNS)]
        for r in rows
    ]
    return header, body


def comparison_page(settings: SweepSettings, rows: list[dict[str, Any]]) -> str:
    header, body = comparison_table(rows)
    epochs = settings.models[0].train_config.epochs
    finals = ""
    for r in rows:
        grids = sorted(RunFolder(settings.out / r["member"]).samples.glob("*.png"))
        if grids:
            finals += (
                f"<figure>{img(base64.b64encode(grids[-1].read_bytes()).decode(), r['member'], 250)}"
                f"<figcaption>{html.escape(r['member'])}</figcaption></figure>"
            )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>FedGAN '
        f"sweep</title><style>{STYLE}</style></head><body>"
        f"<h1>FedGAN sweep: centralised vs {', '.join(str(n) for n in settings.clients)} hospitals</h1>"
        f"<p>{settings.rounds} rounds × {epochs} local epochs ({settings.partition} partition) against "
        f"{settings.rounds * epochs} centralised epochs, same seed and model. Every member is measured with the same "
        "fixed evaluator; the realism score is the paper's (mean sigmoid of one reference discriminator: the "
        "centralised GAN's, which judges DDPM members' images too), so its numbers sit beside the paper's "
        "0.43 / 0.37 / 0.36 / 0.35 for 3 / 5 / 7 / 10 clients. In brackets: the value as a fraction of the same "
        "model's centralised baseline's. ↓ lower is better, ↑ higher is better.</p>"
        f'{table(header, body)}<h2>Final samples</h2><div class="grids">{finals}</div>'
        '<p class="muted">Each member\'s own report.html has its loss curves, grids over rounds and intervals.</p>'
        "</body></html>"
    )


def format_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as plain text for the terminal."""
    header, body = comparison_table(rows)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body, strict=True)]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)) for line in [header, *body]
    )
