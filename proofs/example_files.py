"""The shipped example configurations: the paper's (all properties hold) and broken ones (each fails
one property for its own reason, named in its expect.toml), plus a helper to derive variants.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from dualpath.errors import UnknownNameError

FILES = {"opensm": "opensm.conf", "traffic": "traffic.toml", "roce": "roce.toml", "env": "paper.env",
         # The fabric's own state (issue 17), in the examples that read it (paper-real-state and its breakages).
         "policy": "qos-policy.conf", "pods": "pods.yaml", "mlnx_qos": "nic.mlnx_qos", "sonic": "config_db.json"}


def examples_dir() -> Path:
    return Path(__file__).resolve().parent / "examples"


def example(name: str = "paper") -> dict[str, Path]:
    """Paths of one example's files, keyed as FILES (a file an example lacks does not exist)."""
    folder = examples_dir() / name
    if not folder.is_dir():
        names = [p.name for p in examples_dir().iterdir() if p.is_dir()]
        raise UnknownNameError("example", name, names)
    return {key: folder / file for key, file in FILES.items()}


def broken_examples() -> list[tuple[str, dict]]:
    """(name, expectation) of every broken example: expectation has property, offending, why."""
    out = []
    for folder in sorted(examples_dir().iterdir()):
        if folder.is_dir() and (folder / "expect.toml").exists():
            out.append((folder.name, tomllib.loads((folder / "expect.toml").read_text())))
    return out


def variant(dest: str | Path, edits: dict[str, list[tuple[str, str]]], base: str = "paper") -> dict[str, Path]:
    """Copy example `base` to `dest` and apply text edits: {"opensm": [(old, new), ...], ...}.

    An `old` of "" appends `new` to the file. Each `old` must occur, so a stale edit fails loudly.
    """
    dest = Path(dest)
    shutil.copytree(examples_dir() / base, dest, dirs_exist_ok=True)
    paths = {key: dest / file for key, file in FILES.items()}
    for key, pairs in edits.items():
        text = paths[key].read_text()
        for old, new in pairs:
            if not old:
                text += new
                continue
            if old not in text:
                raise ValueError(f"{paths[key]}: {old!r} not found")
            text = text.replace(old, new, 1)
        paths[key].write_text(text)
    return paths
