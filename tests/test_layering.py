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


def test_models_import_only_torch_diffusers_and_the_standard_library() -> None:
    allowed = {
        "torch",
        "diffusers",
        "fedgan",
        "__future__",
        "dataclasses",
        "collections",
        "typing",
        "math",
        "functools",
    }
    for path in (PACKAGE / "models").rglob("*.py"):
        assert {m.split(".")[0] for m in imported_modules(path)} <= allowed, path


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles_not_even_for_type_checking() -> None:
    """A cycle (even one only under TYPE_CHECKING) means two modules must be understood together."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                }
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        # a module importing its own package's __init__ is how packages work, not a cycle
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            seen.add(nxt)
            if nxt == goal or reaches(nxt, goal, seen):
                return True
        return False

    assert "fedgan.training.privacy" in graph["fedgan.training.run"]  # the graph holds fedgan's own imports
    assert not sorted(name for name in graph if reaches(name, name, set()))
