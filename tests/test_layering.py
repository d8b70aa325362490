"""The package graph: sites and the coordinator are peers that share only common/ (and transplant/, protos/).

Every import statement of every module is read with `ast` (lazy imports inside functions included).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {  # package -> top-level packages it must never import (benchmarks/: harnesses on top of all)
    "site_agent": {"coordinator", "demo", "benchmarks"},
    "coordinator": {"site_agent", "demo", "benchmarks"},
    "common": {"coordinator", "site_agent", "demo", "transplant", "benchmarks"},
    "transplant": {"coordinator", "site_agent", "demo", "common", "benchmarks"},
}


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_in_their_layer(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    bad = [f"{path.relative_to(ROOT)}:{line} imports {top}" for path in files
           for line, top in imported(path) if top in FORBIDDEN[package]]
    assert not bad, "\n".join(bad)


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import os\n\ndef f():\n    from coordinator.auth import x\n    import site_agent.cli\n")
    assert [top for _, top in imported(sample)] == ["os", "coordinator", "site_agent"]
