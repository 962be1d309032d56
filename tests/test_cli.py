"""The `fedgan` command as a user meets it: help, one-line errors, and the main flows."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedgan.cli import build_parser, main
from fedgan.commands.common import MODEL, TRAIN, shown
from fedgan.config import FEDERATION, AlgorithmConfig, PreprocessConfig, StoreConfig, from_dict
from fedgan.demo import QUICK, raw_data

COMMANDS = [
    ["synth"],
    ["synth", "fundus"],
    ["synth", "ct"],
    ["prepare"],
    ["inspect"],
    ["partition"],
    ["train"],
    ["federate"],
    ["evaluate"],
    ["sample"],
    ["audit"],
    ["report"],
    ["sweep"],
    ["demo"],
    ["certs"],
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedgan", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_examples(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "fedgan " in out
    examples = [line.strip() for line in out.split("examples:", 1)[1].splitlines() if line.strip()]
    assert examples and all(line.startswith(f"fedgan {' '.join(command)}") for line in examples), (
        examples
    )  # no stray commands


def subcommand(name: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[name]


@pytest.mark.parametrize(
    ("command", "configs"),
    [
        ("train", (TRAIN, MODEL)),
        ("federate", (TRAIN, MODEL, FEDERATION, AlgorithmConfig())),
        ("sweep", (TRAIN, MODEL, AlgorithmConfig())),
        ("prepare", (PreprocessConfig(), StoreConfig())),
    ],
)
def test_help_shows_the_defaults_the_config_dataclasses_hold(command: str, configs: tuple) -> None:
    """Every flag that sets a config field says that field's real default, so help cannot drift."""
    checked = 0
    switches = (argparse._StoreTrueAction, argparse._StoreFalseAction)  # their default is the switch's absence
    for action in (a for a in subcommand(command)._actions if not isinstance(a, switches)):
        for config in configs:
            if action.dest in {f.name for f in dataclasses.fields(config)} and action.dest not in ("epochs", "seed"):
                assert f"(default: {shown(getattr(config, action.dest))}" in (action.help or ""), action.option_strings
                checked += 1
    assert checked >= 8


def test_the_deployment_run_config_in_pyproject_holds_the_same_defaults() -> None:
    """Flower reads the deployment's settings from pyproject.toml: they must not drift from the dataclasses'."""
    app = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    local_epochs = {"epochs": FEDERATION.local_epochs}
    for section, config in (("model", MODEL), ("train", dataclasses.replace(TRAIN, **local_epochs))):
        assert from_dict(type(config), app[section]) == config, section
    assert from_dict(AlgorithmConfig, app["algorithm"]) == AlgorithmConfig()
    federation = app["federation"]
    for key in ("rounds", "weighting", "fraction", "min-successful", "round-timeout", "secagg-clip"):
        assert federation[key] == getattr(FEDERATION, key.replace("-", "_")), key
    assert tuple(federation["disclose"].split(",")) == FEDERATION.disclose


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("synth", "prepare", "inspect", "partition", "demo"):
        assert name in out


def test_errors_are_one_line_and_nonzero(tmp_path: Path) -> None:
    result = run("prepare", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "s"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"fedgan: error: {tmp_path / 'missing'}: input folder not found"
    result = run("inspect", str(tmp_path))
    assert result.returncode == 1 and "not a FedGAN store" in result.stderr and result.stderr.count("\n") == 1
    result = run("federate", "--store", str(tmp_path), "--out", str(tmp_path / "run"), "--clients", "0")
    assert result.returncode == 1 and result.stderr.strip().endswith(
        "--clients must be at least 1 (1 is the centralised baseline), got 0"
    )
    (tmp_path / "notes.pt").write_text("a text file given where a checkpoint belongs\n")
    result = run("sample", str(tmp_path / "notes.pt"), "--out", str(tmp_path / "samples"), "--count", "4")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "notes.pt: not a readable checkpoint, truncated or corrupt (not a torch file)" in result.stderr
    assert not (tmp_path / "samples").exists()


def test_synth_prepare_inspect_partition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "synth",
                "fundus",
                "--out",
                str(tmp_path / "raw"),
                "--count",
                "25",
                "--size",
                "96",
                "--grade-mix",
                "2,1,1,1,1",
                "-q",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert "wrote 25 fundus photographs" in capsys.readouterr().out
    config = tmp_path / "prep.toml"
    config.write_text("[preprocess]\nsize = 32\ngamma = 1.0\n[store]\nshard-size = 10\n")
    assert (
        main(
            [
                "prepare",
                "--input",
                str(tmp_path / "raw"),
                "--out",
                str(tmp_path / "store"),
                "--config",
                str(config),
                "--bins",
                "8",
                "-q",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "prepared 25 images (eyepacs layout)" in out and "skipped 0" in out
    assert main(["inspect", str(tmp_path / "store"), "--verify", "--records", "3"]) == 0
    out = capsys.readouterr().out
    assert "1 x 32 x 32" in out and "gamma=1.0" in out and "bins=8" in out and "shard-size=10" in out
    assert "every shard matches" in out and "train/" in out
    assert main(["partition", str(tmp_path / "store"), "--clients", "3"]) == 0
    out = capsys.readouterr().out
    assert "label-split partition" in out and out.strip().splitlines()[-1].split()[0] == "all"


def test_unknown_config_key_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "raw").mkdir()
    config = tmp_path / "bad.toml"
    config.write_text("[preprocess]\nclahe-clipp = 3\n")
    assert (
        main(["prepare", "--input", str(tmp_path / "raw"), "--out", str(tmp_path / "s"), "--config", str(config)]) == 1
    )
    assert "unknown config key 'clahe-clipp'" in capsys.readouterr().err


def test_ct_synth_and_prepare_from_the_command_line(tmp_path: Path) -> None:
    assert (
        run(
            "synth", "ct", "--out", str(tmp_path / "ct"), "--patients", "1", "--slices", "3", "--size", "96", "-q"
        ).returncode
        == 0
    )
    result = run(
        "prepare",
        "--input",
        str(tmp_path / "ct"),
        "--out",
        str(tmp_path / "store"),
        "--size",
        "32",
        "--heldout",
        "0",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    assert "prepared 3 images (dicom layout)" in result.stdout


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = run("demo", "--quick", "--out", str(tmp_path / "demo"), "-q")
    assert result.returncode == 0, result.stderr
    demo = tmp_path / "demo"
    for name in ("preview.png", "summary.txt", "config.toml", "stores/fundus/manifest.json", "stores/ct/manifest.json"):
        assert (demo / name).is_file(), name
    assert "label-split across 10 hospitals" in result.stdout
    assert "federated the same model across 3 simulated hospitals" in result.stdout
    assert (demo / "runs" / "federated-3" / "checkpoints" / "round-0002.pt").is_file()
    assert not (demo / "runs" / "ct-pretrain").exists()  # both fundus runs start fresh (docs/recipe.md)
    federated_grid = demo / "runs" / "federated-3" / "samples" / "round-0002.png"
    central_grid = demo / "runs" / "fundus-conditional" / "samples" / "epoch-0002.png"  # 2 rounds of 1 epoch
    assert f"grids at equal epochs: {federated_grid} (federated) and {central_grid} (centralised)" in result.stdout
    assert federated_grid.is_file() and central_grid.is_file()
    for run_name in ("fundus-conditional", "federated-3"):
        assert "<h2>Samples</h2>" in (demo / "runs" / run_name / "report.html").read_text()
        recorded = (demo / "runs" / run_name / "config.toml").read_text()  # both stages train with `graded`
        assert "grade-head = true" in recorded and "generator-grade-weight = 1.0" in recorded
    for run_name in ("fundus-conditional", "federated-3"):
        metrics = json.loads((demo / "runs" / run_name / "eval" / "metrics.json").read_text())
        assert metrics["paper_realism"]["reference"] == str((demo / "runs" / "fundus-conditional").resolve())
    assert "realism (paper)" in result.stdout and "grader kappa" in result.stdout
    assert "[data.fundus]" in (demo / "config.toml").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (demo / "data").rglob("*") if p.is_file()}
    _, _, lines = raw_data(demo, QUICK, fresh=False, workers=1, progress=False)  # a second demo's first step
    assert any(line.startswith("reused the fundus photographs") for line in lines)
    assert any(line.startswith("reused the CT series") for line in lines)
    assert {p: p.stat().st_mtime_ns for p in (demo / "data").rglob("*") if p.is_file()} == stamps


def test_certs_make_a_ca_a_superlink_certificate_and_hospital_keys(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out = tmp_path / "certs"
    assert (
        main(
            ["certs", "--out", str(out), "--hospitals", "2", "--host", "coordinator.example.org", "--host", "10.0.0.5"]
        )
        == 0
    )
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    link = x509.load_pem_x509_certificate((out / "superlink.crt").read_bytes())
    link.verify_directly_issued_by(ca)  # raises unless the CA signed it
    names = link.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["coordinator.example.org"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    for k in range(2):  # what `flwr supernode register` and `flower-supernode --auth-supernode-private-key` load
        public = serialization.load_ssh_public_key((out / "hospitals" / f"hospital-{k}.pub").read_bytes())
        private = serialization.load_ssh_private_key((out / "hospitals" / f"hospital-{k}.key").read_bytes(), None)
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1"
        assert private.public_key().public_numbers() == public.public_numbers()
    assert {oct(p.stat().st_mode & 0o777) for p in out.rglob("*.key")} == {"0o600"}
    before = (out / "ca.key").read_bytes()
    assert main(["certs", "--out", str(out), "--hospitals", "2"]) == 1  # keys are never replaced without --overwrite
    assert (out / "ca.key").read_bytes() == before
