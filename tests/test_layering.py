"""The package's layering: data, models and training run without Flower, so a hospital can
train and a researcher can evaluate without the federation stack."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fedgan"


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("package", ["data", "models", "training"])
def test_lower_layers_never_import_flower_or_the_federation(package: str) -> None:
    files = sorted((PACKAGE / package).rglob("*.py"))
    assert files
    offenders = {
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in files
        for module in imported_modules(path)
        if module.split(".")[0] == "flwr" or module.startswith("fedgan.federation")
    }
    assert not offenders


def test_models_import_only_torch_and_the_standard_library() -> None:
    allowed = {"torch", "fedgan", "__future__", "dataclasses", "collections", "typing", "math", "functools"}
    for path in (PACKAGE / "models").rglob("*.py"):
        assert {m.split(".")[0] for m in imported_modules(path)} <= allowed, path
