"""Siblings import only the core; importing the core loads no heavy dependency."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIBLINGS = ("models", "solver", "runtime", "proofs")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", SIBLINGS)
def test_siblings_import_only_the_core(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] in SIBLINGS:
                offenders.append(f"{path.relative_to(ROOT)} imports top-level {name}")
            if parts[0] == "dualpath" and len(parts) > 1 and parts[1] in SIBLINGS and parts[1] != package:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
            if parts[0] == "dualpath" and len(parts) > 1 and parts[1] in ("cli", "report"):
                offenders.append(f"{path.relative_to(ROOT)} imports the composition root {name}")
    assert offenders == []


def test_core_imports_no_sibling():
    offenders = []
    for path in sorted((ROOT / "dualpath").glob("*.py")):
        if path.stem.startswith("cli") or path.stem in ("report", "demo"):
            continue  # the composition root may compose the siblings
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] == "dualpath" and len(parts) > 1 and parts[1] in SIBLINGS:
                offenders.append(f"{path.name} imports {name}")
    assert offenders == []


def test_import_dualpath_loads_no_heavy_dependency():
    code = (
        "import sys, dualpath, dualpath.cli, dualpath.plan, dualpath.trace, dualpath.policy, dualpath.protocol;"
        "import dualpath.models, dualpath.solver, dualpath.runtime, dualpath.proofs;"
        "print(','.join(m for m in ('torch','ortools','pulp','z3','highspy','numpy','matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == ""


def test_generic_top_level_names_are_not_importable():
    code = "import importlib.util as u; print([n for n in ('models','solver','runtime','proofs') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == "[]"
