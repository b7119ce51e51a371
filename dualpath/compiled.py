"""Compiled builds (mypyc) of the simulator, the scheduler and the step costs, used only while they match the source.

`tools/compile.py` (which `make` runs when a C compiler and Python's headers are present) compiles the
modules of `COMPILED_PACKAGES` with mypyc into `build/mypyc/<interpreter tag>/` and records there the
SHA-256 of every source it compiled. Each of those packages calls `use_compiled(__name__, __path__)`
from its `__init__`: when the record matches the sources byte for byte, the build's folder goes first
on the package's `__path__`, so Python imports the extension modules instead of the `.py` files. The
build is used all or nothing (its modules call each other natively, across packages: the simulator and
the scheduler call the core's step costs), so one edited module sends every package back to pure Python,
with one line on stderr saying which file and how to rebuild.
`DUALPATH_PURE=1` forces pure Python (the test that compares both executions uses it).

The compiled code is the same code: mypyc keeps Python's semantics, and every float operation is the
same IEEE double operation, which is why both give bit-identical results (`tests/core/test_compiled.py`).
What a caller can tell apart: a compiled class checks its annotations at run time (a float where a field
says int is a TypeError); an attribute with a class default that instances may override (`Policy.name`,
`execution`) reads from an instance, not the class; and a Python subclass of a compiled policy does not
pickle (nothing here pickles a policy: worker processes are handed names).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

__all__ = ["COMPILED_PACKAGES", "build_dir", "compiled_packages", "mypyc_attr", "source_digest", "use_compiled"]

_T = TypeVar("_T")

try:  # mypyc reads this decorator by its mypy_extensions name; pure Python only needs a no-op
    from mypy_extensions import mypyc_attr
except ImportError:  # pragma: no cover - installs without mypy (the dev extra) run pure Python anyway
    if not TYPE_CHECKING:
        def mypyc_attr(*_attrs: Any, **_kwattrs: Any) -> Callable[[_T], _T]:
            return lambda cls: cls

# One mypyc group per package: every module of the simulator, of the solver the policies a simulation
# calls per event (the paper's rules, their baselines, the online optimizer and its LP), and of the core
# the step costs alone. The core's specs stay pure: compiled, frozen dataclasses lose their cached
# properties and run slower, not faster (measured).
COMPILED_PACKAGES: dict[str, tuple[str, ...]] = {
    "dualpath": ("step_costs",),
    "dualpath.runtime.sim": ("board", "context", "decode_groups", "events", "hardware", "nic", "online",
                             "parallelism", "plan_replay", "prefill_groups", "progress", "recorder", "results",
                             "simulator", "state", "storage"),
    "dualpath.solver": ("baselines", "chunk_fit", "online", "optimized", "paper_rules", "problem",
                        "scheduler_view", "split_lp", "waiting_keys"),
}
PURE_ENV = "DUALPATH_PURE"
MANIFEST = "manifest.json"

_ROOT = Path(__file__).resolve().parent.parent
_EXTENSION_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
_active: dict[str, str] = {}  # package -> folder it loads from
_told: set[tuple[Path, str]] = set()  # the reasons a stale build was reported for, in this process


def build_dir(root: Path = _ROOT) -> Path:
    """Where `tools/compile.py` puts this interpreter's build (one folder per Python version)."""
    return root / "build" / "mypyc" / sys.implementation.cache_tag


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_path(module: str, root: Path = _ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def stale_source(package: str, build: Path, root: Path = _ROOT) -> str | None:
    """Why the build in `build` cannot be used for `package` ("" when it can; None when it has none)."""
    try:
        manifest = json.loads((build / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    modules: dict[str, str] = manifest.get("modules", {})
    if not any(m.rpartition(".")[0] == package for m in modules):
        return None
    built: dict[Path, set[str]] = {}
    for module, digest in sorted(modules.items()):
        folder = build.joinpath(*module.rpartition(".")[0].split("."))
        if folder not in built:
            try:
                built[folder] = {n.split(".", 1)[0] for n in os.listdir(folder) if n.endswith(_EXTENSION_SUFFIX)}
            except OSError:
                built[folder] = set()
        # A module whose extension is gone would be imported from source beside its compiled copy, which
        # the rest of the build calls directly: two versions of its classes in one process.
        if module.rpartition(".")[2] not in built[folder]:
            return f"{module}'s extension is missing from {folder}"
        path = source_path(module, root)
        try:
            current = source_digest(path)
        except OSError:
            return f"{path} is gone"
        if current != digest:
            return f"{path.relative_to(root)} changed since it was compiled"
    return ""


def use_compiled(package: str, path: list[str], root: Path = _ROOT) -> bool:
    """Put `package`'s compiled build first on its `__path__` when it matches the source; True if so."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return False
    build = build_dir(root)
    why = stale_source(package, build, root)
    if why is None:
        return False
    if why:
        if (build, why) not in _told:  # every package finds the same reason: say it once
            _told.add((build, why))
            print(f"dualpath: the simulator and scheduler run as pure Python ({why}); `make` or "
                  "`python tools/compile.py` rebuilds the compiled build", file=sys.stderr)
        return False
    folder = str(build.joinpath(*package.split(".")))
    path.insert(0, folder)
    _active[package] = folder
    return True


def compiled_packages() -> dict[str, str]:
    """The packages imported from a compiled build in this process, and the folders they load from."""
    return dict(_active)
