"""`fedgan report RUN`: one self-contained HTML page from a run folder.

It reads only what the run folder holds (config.toml, metrics.jsonl, samples/, eval/metrics.json),
so a report can be rebuilt at any time and shared as one file: plots and sample grids are inlined
as base64 PNGs. Works for federated runs (per round and per hospital) and centralised ones (per
step, averaged per epoch).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: reports are built on servers
import cv2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fedgan.atomic import write_text_atomic  # noqa: E402
from fedgan.evaluation.privacy import ATTACKS, PAIRS_FILE  # noqa: E402
from fedgan.evaluation.results import (  # noqa: E402
    FID,
    FIDELITY,
    FIDELITY_GRADER,
    FIDELITY_PER_GRADE,
    PAPER_REALISM,
    REAL_TRAINED,
    SYNTHETIC_TRAINED,
    UTILITY,
    VALUE,
    read_result,
)
from fedgan.runfolder import (  # noqa: E402
    AGGREGATE,
    GRADE_KAPPA,
    KID,
    ROUND,
    SECONDS,
    STEP,
    RunFolder,
    is_federated,
    quality_points,
)
from fedgan.training.grids import image_grid  # noqa: E402

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
.grids { display: flex; flex-wrap: wrap; gap: 1em; } figure { margin: 0; text-align: center; font-size: .85em; }
img { image-rendering: pixelated; max-width: 100%; } .muted { color: #777; }
code { background: #f4f4f4; padding: 0 .2em; }
"""

#: what each `--disclose` choice reveals, in the report's words
DISCLOSURE_NOTES = {"grades": "its images per grade", "losses": "its mean losses, steps and seconds per round"}
METRIC_NOTES = {
    "fd": "Fréchet distance (lower is better)",
    "kid": "kernel inception-style distance, unbiased (lower is better)",
    "precision": "share of generated samples on the real manifold",
    "recall": "share of real samples on the generated manifold",
    "density": "real neighbourhoods per generated sample / k (1 ≈ real)",
    "coverage": "share of real neighbourhoods reached",
    "realism_score": "mean per-sample realism (Kynkäänniemi et al.; > 1 inside the real manifold)",
}


def png(figure: plt.Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def img(data: str, alt: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{size} src="data:image/png;base64,{data}">'


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{cell if isinstance(cell, Markup) else html.escape(str(cell))}</td>" for cell in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class Markup(str):
    """A table cell that is already HTML."""


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def loss_figure(lines: list[dict[str, Any]], diffusion: bool = False) -> tuple[str, str]:
    """Loss curves and a caption: per round (aggregate and each hospital) or per epoch. A GAN has
    two losses; a DDPM one, its denoising loss (kept as its `g_loss`, see `loop.StepStats`)."""
    aggregates = [r for r in lines if r.get(AGGREGATE)]
    panels = [("g_loss", "denoising")] if diffusion else [("d_loss", "discriminator"), ("g_loss", "generator")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), sharex=True, squeeze=False)
    axes = axes[0]
    if aggregates:
        clients: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in lines:
            if "client" in r:
                clients[r["client"]].append(r)
        for ax, (key, name) in zip(axes, panels, strict=True):
            for client, rows in sorted(clients.items()):
                ax.plot(
                    [r["round"] for r in rows],
                    [r[key] for r in rows],
                    lw=1,
                    alpha=0.6,
                    marker=".",
                    label=f"hospital {client}",
                )
            done = [r for r in aggregates if r.get(key) is not None]
            ax.plot([r["round"] for r in done], [r[key] for r in done], color="black", lw=2.2, marker="o", label="mean")
            ax.set(title=f"{name} loss", xlabel="round")
        caption = "Mean local training loss per round: each hospital (thin) and their mean (black)."
    else:
        lines = [r for r in lines if "d_loss" in r]  # the step lines, not the evaluations between them
        epochs: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in lines:
            epochs[r["epoch"]].append(r)
        for ax, (key, name) in zip(axes, panels, strict=True):
            ax.plot([r["step"] for r in lines], [r[key] for r in lines], lw=0.6, alpha=0.4, label="step")
            ax.plot(
                [rows[-1]["step"] for rows in epochs.values()],
                [sum(r[key] for r in rows) / len(rows) for rows in epochs.values()],
                color="black",
                lw=2,
                marker="o",
                label="epoch mean",
            )
            ax.set(title=f"{name} loss", xlabel="step")
        caption = "Training losses per step and their mean per epoch."
    axes[0].legend(fontsize=7, ncol=2)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds and steps are whole numbers
    return png(fig), caption


def quality_figure(lines: list[dict[str, Any]]) -> tuple[str, str] | None:
    """In-training KID (both feature spaces) against steps or rounds, and against training seconds."""
    federated, points = is_federated(lines), quality_points(lines)
    if not points:
        return None
    if federated:
        progress, unit = [r[ROUND] for r in points], ROUND
        seconds = list(np.cumsum([r[SECONDS] for r in points]))
    else:
        progress, unit, seconds = [r[STEP] for r in points], STEP, [r[SECONDS] for r in points]
    graded = [r for r in points if GRADE_KAPPA in r]
    fig, axes = plt.subplots(1, 3 if graded else 2, figsize=(16 if graded else 11, 3.4))
    axes[1].sharey(axes[0])
    for key, label in ((KID, "structure (headline)"), (f"{KID}_grader", "grader")):
        values = [max(r.get(key, np.nan), 1e-6) for r in points]
        axes[0].plot(progress, values, marker="o", ms=3, label=label)
        axes[1].plot(seconds, values, marker="o", ms=3, label=label)
    axes[0].set(xlabel=unit, ylabel="KID (log scale)", yscale="log", title=f"KID against {unit}s")
    axes[1].set(xlabel="training seconds", title="KID against wall time")
    axes[0].legend(fontsize=8)
    caption = (
        f"KID of {'the global model after each round' if federated else 'the moving-average generator every few steps'}"
        " on a "
        "fixed-noise sample, against the real training split, with the store's fixed evaluator (lower is better). "
        "checkpoints/best holds the lowest structure KID."
    )
    if graded:
        axes[2].plot(
            [r[ROUND if federated else STEP] for r in graded], [r[GRADE_KAPPA] for r in graded], marker="o", ms=3
        )
        axes[2].axhline(0, color="grey", lw=0.8)
        axes[2].set(xlabel=unit, ylabel="quadratic kappa", ylim=(-0.2, 1), title="Do the images carry their grades?")
        caption += (
            " Right: how well a grader trained on the real training split reads the grades the images were "
            "generated for (quadratic kappa; 0 is chance, real held-out images score the grader's own kappa)."
        )
    for ax in axes:
        ax.grid(alpha=0.3)
    return png(fig), caption


def grids(run: Path, most: int = 6) -> str:
    files = sorted(RunFolder(run).samples.glob("*.png"))
    if not files:
        return '<p class="muted">No sample grids in this run.</p>'
    count = min(most, len(files))  # evenly spaced over the run, first and last included
    picked = sorted({files[round(i * (len(files) - 1) / max(count - 1, 1))] for i in range(count)})
    small = "".join(
        f"<figure>{img(base64.b64encode(f.read_bytes()).decode(), f.stem, 170)}"
        f"<figcaption>{f.stem}</figcaption></figure>"
        for f in picked[:-1]
    )
    final = files[-1]
    return (
        f'<div class="grids">{small}</div><h3>Final: {final.stem}</h3>'
        f"{img(base64.b64encode(final.read_bytes()).decode(), final.stem, 520)}"
        '<p class="muted">Fixed noise: the same latent vectors in every grid; conditional models show one row per '
        "grade 0–4.</p>"
    )


def hospitals_table(lines: list[dict[str, Any]], record: dict[str, Any]) -> str:
    first_round = min((r["round"] for r in lines if "client" in r), default=None)
    rows = sorted((r for r in lines if r.get("round") == first_round and "client" in r), key=lambda r: r["client"])
    if not rows:
        return ""
    federation = record.get("config", {}).get("federation", {})
    revealed = (
        ["its image count (its weight)", *(DISCLOSURE_NOTES[d] for d in federation["disclose"])]
        if "disclose" in federation
        else []
    )
    out = (
        (
            f"<p>Each hospital revealed to the coordinator: {html.escape('; '.join(revealed))}, besides the model "
            "updates "
            "(or, for mdgan, the gradients) of every round.</p>"
        )
        if revealed
        else ""
    )
    grades = all("grades" in r for r in rows)
    return (
        out
        + f"<h3>Images{' per grade' if grades else ''} per hospital</h3>"
        + table(
            ["hospital", "images", *((f"grade {g}" for g in range(5)) if grades else ())],
            [[r["client"], r["examples"], *(r["grades"] if grades else ())] for r in rows],
        )
    )


def left_out(lines: list[dict[str, Any]]) -> str:
    """Replies the coordinator left out, by reason: crashed, late, or rejected by its screening."""
    reasons: dict[str, list[int]] = {}
    for r in lines:
        if "node" in r and "failed" in r:
            reasons.setdefault(r["failed"], []).append(r["round"])
    if not reasons:
        return ""
    return "<h3>Hospital replies left out</h3>" + table(
        ["reason", "replies", "rounds"],
        [
            [reason, len(rounds), ", ".join(map(str, sorted(set(rounds))))]
            for reason, rounds in sorted(reasons.items(), key=lambda item: -len(item[1]))
        ],
    )


def timings(lines: list[dict[str, Any]]) -> str:
    aggregates = [r for r in lines if r.get(AGGREGATE)]
    if aggregates:
        sent = sum(r.get("bytes_sent", 0) for r in lines if "client" in r)
        received = sum(r.get("bytes_received", 0) for r in lines if "client" in r)
        failed = sum(r.get("failed", 0) for r in aggregates)
        rows = [
            ["rounds", len(aggregates)],
            ["seconds per round (mean)", fmt(sum(r["seconds"] for r in aggregates) / len(aggregates))],
            *(
                [["DP epsilon spent (largest over hospitals)", fmt(aggregates[-1]["epsilon"])]]
                if "epsilon" in aggregates[-1]
                else []
            ),
            ["seconds in total", fmt(sum(r["seconds"] for r in aggregates))],
            ["hospital replies left out", failed],
            ["MB sent by hospitals", fmt(sent / 1e6)],
            ["MB received by hospitals", fmt(received / 1e6)],
        ]
        return table(["", "value"], rows)
    if lines:
        rate = [r["images_per_s"] for r in lines if "images_per_s" in r]
        lines = [r for r in lines if "d_loss" in r]
        return table(
            ["", "value"],
            [
                ["epochs", lines[-1]["epoch"]],
                ["steps", lines[-1]["step"]],
                ["images/s (mean)", fmt(sum(rate) / len(rate)) if rate else "–"],
                *([["DP epsilon spent", fmt(lines[-1]["epsilon"])]] if "epsilon" in lines[-1] else []),
            ],
        )
    return '<p class="muted">No metrics recorded.</p>'


def metrics_section(run: Path) -> str:
    result = read_result(run)
    if result is None:
        command = f"fedgan evaluate {html.escape(str(run))} --real STORE"
        return f'<p class="muted">Not evaluated yet: <code>{command}</code>.</p>'
    fidelity, grader = result[FIDELITY], result.get(FIDELITY_GRADER, {})

    def cell(values: dict[str, dict[str, float]], name: str) -> str:
        v = values.get(name)
        return f"{fmt(v['value'])} ({fmt(v['low'])} – {fmt(v['high'])})" if v else "–"

    out = [
        f"<p>{result['counts']['generated']} generated vs {result['counts']['real']} real training images, with the "
        "fixed "
        f"evaluator <code>{result['evaluator_sha256'][:12]}</code>, made from "
        f"{result['counts'].get('evaluator', 'the')} held-out "
        "real images no GAN saw (the other half of the held-out split tests the graders below). Two feature "
        "spaces: <b>structure</b> (the headline: fixed measurements of layout, sharpness, vessel orientation and "
        "tiling "
        "artefacts, which worsen under blur, checkerboards, missing vessels and repeated images) and <b>grader</b> "
        "(a DR "
        "grade classifier's features: it tracks lesions and is blind to anatomy). Each value is the mean over "
        f"{result['intervals']['draws']} independently generated sets of that size, with the 95 % interval of their "
        "spread.</p>",
        table(
            ["metric", "structure (headline), 95 % interval", "grader, 95 % interval", "meaning"],
            [[name, cell(fidelity, name), cell(grader, name), METRIC_NOTES.get(name, "")] for name in fidelity],
        ),
    ]
    if result.get(FIDELITY_PER_GRADE):
        out.append(
            "<h3>Per grade</h3>"
            + table(
                ["grade", "FD", "precision", "recall", "coverage", "real", "generated"],
                [
                    [
                        g,
                        fmt(v["fd"]),
                        fmt(v["precision"]),
                        fmt(v["recall"]),
                        fmt(v["coverage"]),
                        v["real"],
                        v["generated"],
                    ]
                    for g, v in result[FIDELITY_PER_GRADE].items()
                ],
            )
        )
    if FID in result:
        out.append(
            "<p>Standard FID with the supplied Inception weights "
            f"(<code>{result[FID]['weights_sha256'][:12]}</code>): "
            f"<b>{fmt(result[FID][VALUE])}</b>.</p>"
        )
    if PAPER_REALISM in result:
        out.append(
            f"<p>The paper's realism score (mean sigmoid of one fixed reference discriminator, "
            f"<code>{html.escape(result[PAPER_REALISM]['reference'])}</code>, on generated images): "
            f"<b>{fmt(result[PAPER_REALISM][VALUE])}</b>. The paper reports 0.43 / 0.37 / 0.36 / 0.35 for "
            "3 / 5 / 7 / 10 clients with its own reference.</p>"
        )
    utility = result[UTILITY]
    synthetic = utility[SYNTHETIC_TRAINED]

    def cells(scores: dict[str, Any]) -> list[str]:
        if "accuracy" not in scores:
            return [scores["reason"], "n/a", "n/a"]
        accuracy = fmt(scores["accuracy"]) + (
            " (predicts one grade: a majority-class guess)" if scores.get("single_grade") else ""
        )
        return [
            fmt(scores["kappa"]),
            fmt(scores["balanced_accuracy"]) if "balanced_accuracy" in scores else "–",
            accuracy,
        ]

    rows = [
        ["real images (baseline)", *cells(utility[REAL_TRAINED])],
        ["synthetic images", *cells(synthetic)],
        ["the evaluator itself", *cells(utility["evaluator"])],
    ]
    out.append(
        f"<h3>Utility: train a grader, test on {utility['test_images']} real held-out images</h3>"
        + table(["grader trained on", "quadratic weighted kappa", "balanced accuracy", "accuracy"], rows)
        + '<p class="muted">Kappa and balanced accuracy first: held-out data is mostly grade 0, so plain accuracy '
        "rewards a grader that always answers 0.</p>"
    )
    return "".join(out)


def privacy_section(run: Path) -> str:
    path = RunFolder(run).evaluation / "privacy.json"
    if not path.exists():
        command = f"fedgan audit {html.escape(str(run))} --members STORE --non-members STORE:heldout"
        return f'<p class="muted">Not audited yet: <code>{command}</code>.</p>'
    result = json.loads(path.read_text())
    rows = []
    for name, title in ATTACKS.items():
        if name not in result:  # one white-box attack per kind of model
            continue
        auc, tpr = result[name]["auc"], result[name]["tpr_at_1pct_fpr"]
        rows.append(
            [
                title,
                f"{fmt(auc['value'])} ({fmt(auc['low'])} – {fmt(auc['high'])})",
                f"{fmt(tpr['value'])} ({fmt(tpr['low'])} – {fmt(tpr['high'])})",
                result[name]["members"],
            ]
        )
    memo = result["memorisation"]
    out = [
        f"<p>Membership inference: members from <code>{html.escape(result['members'])}</code>, non-members from "
        f"<code>{html.escape(result['non_members'])}</code>. AUC 0.5 is chance; TPR at 1 % FPR is what an attacker "
        "gets when false accusations must be rare.</p>",
        table(["attack", "ROC AUC (95 %)", "TPR at 1 % FPR (95 %)", "images per side"], rows),
        f"<p>Memorisation: median distance of a generated image to its closest training image "
        f"{fmt(memo['generated_to_train']['median'])}, of a held-out real image "
        f"{fmt(memo['heldout_to_train']['median'])} "
        f"(ratio {fmt(memo['ratio_of_medians'])}; well below 1 would mean copies).</p>",
    ]
    pairs = RunFolder(run).evaluation / PAIRS_FILE
    if pairs.exists():
        data = np.load(pairs)
        both = torch.from_numpy(np.concatenate([data["generated"], data["train"]]))
        ok, encoded = cv2.imencode(".png", image_grid(both, columns=len(data["generated"])))
        out.append(
            "<h3>Closest generated (top) and training (bottom) pairs</h3>"
            + img(base64.b64encode(encoded.tobytes()).decode(), "closest pairs", 60 * len(data["generated"]))
        )
    return "".join(out)


def config_section(record: dict[str, Any]) -> str:
    out = []
    for section, values in record.get("config", {}).items():
        if isinstance(values, dict):
            out.append(
                f"<h3>{html.escape(section)}</h3>"
                + table(["setting", "value"], [[k, fmt(v)] for k, v in values.items()])
            )
    data = record.get("data", {})
    if data:
        out.append(
            "<h3>Data</h3>"
            + table(
                ["store", "path", "manifest sha256"],
                [[name, d["path"], d["manifest-sha256"][:16]] for name, d in data.items()],
            )
        )
    versions = record.get("versions", {})
    out.append(f'<p class="muted">Versions: {html.escape(", ".join(f"{k} {v}" for k, v in versions.items()))}</p>')
    return "".join(out)


def build_report(run: Path) -> Path:
    folder = RunFolder(Path(run))
    record, lines = folder.record(), folder.lines()
    run = folder.path
    config = record.get("config", {})
    model = config.get("model", {}).get("kind", "gan")  # runs from before the DDPM are GANs
    kind = "federated" if is_federated(lines) else "centralised"
    if kind == "federated":  # runs from before algorithms were recorded are FedAvg
        hospitals = config.get("federation", {}).get("clients", config.get("federation", {}).get("hospitals", "?"))
        kind += f" ({config.get('algorithm', {}).get('name', 'fedavg')}, {hospitals} hospitals)"
    meta = record.get("run", {})
    parts = [
        f"<h1>FedGAN run: {html.escape(run.name)}</h1>",
        f'<p class="muted">{model.upper()}, {kind}; created {html.escape(str(meta.get("created", "?")))}; '
        f"seed {meta.get('seed', '?')}; "
        f"command <code>{html.escape(str(meta.get('command', '')))}</code></p>",
        "<h2>Metrics</h2>",
        metrics_section(run),
        "<h2>Privacy</h2>",
        privacy_section(run),
    ]
    quality = quality_figure(lines)
    if quality:
        parts += [
            "<h2>Quality while training</h2>",
            img(quality[0], "KID curves"),
            f'<p class="muted">{quality[1]}</p>',
        ]
    if lines:
        figure, caption = loss_figure(lines, diffusion=model == "ddpm")
        parts += ["<h2>Losses</h2>", img(figure, "loss curves"), f'<p class="muted">{caption}</p>']
    parts += [
        "<h2>Samples</h2>",
        grids(run),
        "<h2>Timings and communication</h2>",
        timings(lines),
        left_out(lines),
        "<h2>Configuration and data</h2>",
        hospitals_table(lines, record),
        config_section(record),
    ]
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>FedGAN report: '
        f"{html.escape(run.name)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    out = run / "report.html"
    write_text_atomic(out, page)
    return out
