"""The compiled (mypyc) build: used only while it matches the source, and giving the pure code's results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from dualpath import compiled
from dualpath.compiled import MANIFEST, PURE_ENV, build_dir, source_digest, use_compiled

ROOT = Path(__file__).resolve().parents[2]
EXT = sysconfig.get_config_var("EXT_SUFFIX")


def fake_build(root: Path, source: str = "x = 1\n") -> Path:
    """A root with one package module `pkg.sub.mod` and a build whose manifest records it."""
    src = root / "pkg" / "sub" / "mod.py"
    src.parent.mkdir(parents=True)
    src.write_text(source)
    build = build_dir(root)
    (build / "pkg" / "sub").mkdir(parents=True)
    (build / "pkg" / "sub" / f"mod{EXT}").write_bytes(b"")
    (build / MANIFEST).write_text(json.dumps({"modules": {"pkg.sub.mod": source_digest(src)}}))
    return src


def test_a_build_that_matches_the_source_goes_first_on_the_package_path(tmp_path, monkeypatch):
    monkeypatch.delenv(PURE_ENV, raising=False)
    fake_build(tmp_path)
    path = ["/src/pkg/sub"]
    assert use_compiled("pkg.sub", path, tmp_path)
    assert path == [str(build_dir(tmp_path) / "pkg" / "sub"), "/src/pkg/sub"]


def test_an_edited_module_sends_its_package_back_to_pure_python_and_says_which(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(PURE_ENV, raising=False)
    src = fake_build(tmp_path)
    src.write_text("x = 2\n")
    path = ["/src/pkg/sub"]
    assert not use_compiled("pkg.sub", path, tmp_path)
    assert path == ["/src/pkg/sub"]
    assert "pkg/sub/mod.py changed since it was compiled" in capsys.readouterr().err


def test_an_edited_module_of_one_package_keeps_the_other_packages_pure_too(tmp_path, monkeypatch, capsys):
    """The packages call each other natively (the simulator and the rules call the core's step costs), so
    the build is used all or nothing: a package whose own modules are unchanged stays pure as well."""
    monkeypatch.delenv(PURE_ENV, raising=False)
    src = fake_build(tmp_path)
    core = tmp_path / "pkg" / "core.py"
    core.write_text("y = 1\n")
    (build_dir(tmp_path) / "pkg" / f"core{EXT}").write_bytes(b"")
    manifest = build_dir(tmp_path) / MANIFEST
    modules = json.loads(manifest.read_text())["modules"]
    manifest.write_text(json.dumps({"modules": {**modules, "pkg.core": source_digest(core)}}))
    assert use_compiled("pkg", [], tmp_path) and use_compiled("pkg.sub", [], tmp_path)
    src.write_text("x = 3\n")
    assert not use_compiled("pkg", [], tmp_path)
    assert not use_compiled("pkg.sub", [], tmp_path)
    assert capsys.readouterr().err.count("pkg/sub/mod.py changed since it was compiled") == 1  # said once


def test_a_build_missing_a_modules_extension_is_not_used(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(PURE_ENV, raising=False)
    fake_build(tmp_path)
    (build_dir(tmp_path) / "pkg" / "sub" / f"mod{EXT}").unlink()
    assert not use_compiled("pkg.sub", [], tmp_path)
    assert "pkg.sub.mod's extension is missing" in capsys.readouterr().err


def test_no_build_another_package_or_the_pure_switch_keep_pure_python_quietly(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(PURE_ENV, raising=False)
    path: list[str] = []
    assert not use_compiled("pkg.sub", path, tmp_path)  # no manifest at all
    fake_build(tmp_path)
    assert not use_compiled("pkg.other", path, tmp_path)  # nothing of that package compiled
    monkeypatch.setenv(PURE_ENV, "1")
    assert not use_compiled("pkg.sub", path, tmp_path)
    assert path == [] and capsys.readouterr().err == ""


def test_the_manifest_lists_every_module_the_packages_name():
    """What `tools/compile.py` builds is what the packages check: a module missing from the list would be
    compiled against an old neighbour or silently left out."""
    for package, modules in compiled.COMPILED_PACKAGES.items():
        for module in modules:
            assert compiled.source_path(f"{package}.{module}", ROOT).is_file(), (package, module)


# Every policy (the optimizer's LP included) offline, and an online run: the records printed in full
# precision, so one differing bit anywhere in a JCT, TTFT or event count fails.
RUN = """
import sys
from dualpath.calibration import calibrated_llm
from dualpath.compiled import compiled_packages
from dualpath.models.llms import llm_preset
from dualpath.models.registry import resolve_cluster, resolve_workload
from dualpath.runtime.sim.parallelism import expert_groups
from dualpath.runtime.sim.simulator import simulate
from dualpath.solver.policies import POLICY_NAMES, make_policy

llm = calibrated_llm(llm_preset("deepseek-v3.2"))
cluster = expert_groups(resolve_cluster("2P4D"), llm)
print(sorted(compiled_packages()))
runs = [(name, resolve_workload("agentic-64k", agents=48), False) for name in POLICY_NAMES]
runs.append(("dualpath", resolve_workload("agentic-64k", agents=48, aps=0.5), True))
for name, workload, online in runs:
    trace = simulate(cluster, llm, workload, make_policy(name, cluster, llm), online=online)
    print(name, online, trace.meta["events"], trace.records)
"""


def run_simulations(pure: bool) -> list[str]:
    env = {**os.environ, PURE_ENV: "1" if pure else "0"}
    out = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.splitlines()


@pytest.mark.slow
def test_the_compiled_simulator_gives_the_pure_simulators_results_bit_for_bit():
    compiled_run = run_simulations(pure=False)
    if compiled_run[0] == "[]":
        pytest.skip("no compiled build in use (tools/compile.py needs a C compiler; `make` runs it)")
    assert compiled_run[0] == "['dualpath', 'dualpath.runtime.sim', 'dualpath.solver']"
    pure_run = run_simulations(pure=True)
    assert pure_run[0] == "[]"
    assert len(compiled_run) == len(pure_run) == 10  # eight policies and the online run
    for mine, theirs in zip(compiled_run[1:], pure_run[1:]):
        assert mine == theirs
