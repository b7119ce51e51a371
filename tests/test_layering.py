"""Siblings import only the core; importing the core loads no heavy dependency."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT

SIBLINGS = ("models", "solver", "runtime", "proofs")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
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
            if parts[0] == "dualpath" and len(parts) > 1 and (
                    parts[1].startswith("cli") or parts[1] in ("report", "demo", "serve")):
                offenders.append(f"{path.relative_to(ROOT)} imports the composition root {name}")
    assert offenders == []


# Inside runtime/: the simulator and the real runtime (engines, transports, real-run scheduling and the
# engine process entry point) share nothing but the core and runtime's flat shared modules.
SIMULATOR = ("sim",)
REAL = ("engines", "transports", "scheduling", "engine")


def _runtime_part(path: Path) -> str:
    rel = path.relative_to(ROOT / "runtime")
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


@pytest.mark.parametrize(("side", "other"), [(SIMULATOR, REAL), (REAL, SIMULATOR)])
def test_simulator_and_real_runtime_never_import_each_other(side, other):
    offenders, checked = [], 0
    for path in sorted((ROOT / "runtime").rglob("*.py")):
        if _runtime_part(path) not in side:
            continue
        checked += 1
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[:2] == ["dualpath", "runtime"] and len(parts) > 2 and parts[2] in other:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
        if path.name != "__init__.py":
            for node in ast.walk(ast.parse(path.read_text())):
                # `from dualpath.runtime import sim` would pass the check above.
                if isinstance(node, ast.ImportFrom) and node.module == "dualpath.runtime":
                    offenders.extend(f"{path.relative_to(ROOT)} imports dualpath.runtime.{a.name}"
                                     for a in node.names if a.name in other)
    assert checked > 0
    assert offenders == []


def test_runtime_keeps_at_most_a_dozen_flat_modules():
    flat = sorted(p.name for p in (ROOT / "runtime").glob("*.py"))
    assert len(flat) <= 12, flat


def test_core_imports_no_sibling():
    offenders = []
    for path in sorted((ROOT / "dualpath").glob("*.py")):  # glob does not enter the links to the siblings
        if path.stem.startswith("cli") or path.stem in ("report", "demo"):
            continue  # the composition roots (the CLI, the HTTP service) may compose the siblings
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] == "dualpath" and len(parts) > 1 and parts[1] in SIBLINGS:
                offenders.append(f"{path.name} imports {name}")
    assert offenders == []


def test_import_dualpath_loads_no_heavy_dependency():
    code = (
        "import sys, dualpath, dualpath.cli, dualpath.plan, dualpath.trace, dualpath.policy, dualpath.protocol;"
        "import dualpath.models, dualpath.solver, dualpath.runtime, dualpath.proofs;"
        "import dualpath.runtime.sim, dualpath.runtime.engines, dualpath.runtime.transports;"
        "import dualpath.runtime.scheduling;"
        "import dualpath.serve, dualpath.cli_serve;"
        "print(','.join(m for m in ('torch','ortools','pulp','z3','highspy','numpy','matplotlib','fastapi','uvicorn',"
        "'prometheus_client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == ""


def test_generic_top_level_names_are_not_importable():
    code = "import importlib.util as u; print([n for n in ('models','solver','runtime','proofs') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == "[]"
