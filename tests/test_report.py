"""`fedgan report` for a centralised, evaluated run: one self-contained page with every section."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import TINY, small_store

from fedgan.config import TrainConfig
from fedgan.errors import FedGANError
from fedgan.evaluation.evaluate import evaluate_run
from fedgan.reporting.report import build_report
from fedgan.training.run import train_centralised


class Tags(HTMLParser):
    """Counts opened and closed tags, to check the page is balanced."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in ("img", "meta", "br"):
            self.open.append(tag)
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"unbalanced </{tag}>"
        self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data)


@pytest.mark.slow
def test_report_of_an_evaluated_centralised_run(fundus_set: Path, tmp_path: Path) -> None:
    store = small_store(fundus_set, tmp_path / "store", size=16, heldout=0.4)
    run = tmp_path / "run"
    train_centralised(
        store,
        run,
        model_config=TINY,
        train_config=TrainConfig(epochs=2, batch_size=4, sample_count=10),
        progress=False,
    )
    result = evaluate_run(run, store, count=30)
    page = build_report(run).read_text()
    parser = Tags()
    parser.feed(page)
    assert parser.open == []
    assert parser.headings == [
        "Metrics",
        "Privacy",
        "Losses",
        "Samples",
        "Timings and communication",
        "Configuration and data",
    ]
    assert f"{result['fidelity']['fd']['value']:.4g}" in page
    assert "an unconditional generator&#x27;s images carry no grade" in page  # TSTR marked not applicable, with why
    assert result["evaluator_sha256"][:12] in page
    assert "paper_realism" not in json.loads(
        (run / "eval" / "metrics.json").read_text()
    )  # no reference given: not invented


def test_report_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(FedGANError, match="not a run folder"):
        build_report(tmp_path)
