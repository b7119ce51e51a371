"""`dualpath run --engines`: attaching to engines some other launcher started.

Engines here are real engines on loopback, started by the test (in its own process) as another
launcher would; `test_netns.py` runs them in separate network namespaces."""

from __future__ import annotations

import json
import socket
from dataclasses import replace

import pytest

pytest.importorskip("torch")

from dualpath.cli import main
from dualpath.cluster import Role
from dualpath.models.registry import resolve_cluster, resolve_model
from dualpath.runtime.engine import EngineOptions, create_engine
from dualpath.runtime.scheduling.local_runtime import LocalRuntime
from tests.paths import EXAMPLES

CLUSTER = str(EXAMPLES / "clusters" / "local-1p1d.toml")
RUN = ["run", "--cluster", CLUSTER, "--model", "tiny", "--agents", "2", "--turns", "2", "--scale", "128"]
SECRET = "ab" * 32  # as $DUALPATH_SECRET holds it (hex)
KEY = bytes.fromhex(SECRET)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def engines(tmp_path, monkeypatch):
    """PE0 and DE0 of local-1p1d on loopback, configured by `--engine-commands`' options; yields
    (their addresses, the store dir, the engines)."""
    monkeypatch.setenv("DUALPATH_SECRET", SECRET)
    cluster, llm = resolve_cluster(CLUSTER), resolve_model("tiny")
    local = LocalRuntime(cluster, llm, block_tokens=64, max_context_tokens=1024, work_dir=tmp_path / "shared")
    started = []
    try:
        for engine in cluster.engines(Role.PREFILL) + cluster.engines(Role.DECODE):
            e = create_engine(replace(local.options(engine), snic_bytes_per_s=None, cnic_bytes_per_s=None), KEY)
            started.append(e)
            e.start()
        yield [e.address for e in started], local.store_dir, started
    finally:
        for e in started:
            e.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _attach(addresses) -> list[str]:
    return ["--engines", ",".join(f"{h}:{p}" for h, p in addresses)]


def test_a_run_attached_to_engines_verifies_and_leaves_them_running(capsys, tmp_path, engines):
    addresses, store, started = engines
    out = tmp_path / "run.json"
    code, _, err = run(capsys, *RUN, *_attach(addresses), "--store", str(store), "--verify",
                       "--policy", "layerwise,dualpath", "--json", str(out))
    assert code == 0, err
    results = json.loads(out.read_text())["results"]
    assert [r["policy"] for r in results] == ["layerwise", "dualpath"]
    assert all(r["lost_turns"] == 0 and r["wrong_turns"] == [] and r["turns"] == 2 for r in results)
    assert {rec["pe"] for r in results for rec in r["trace"]["records"]} == {"PE0"}
    assert not any(e.stopped.is_set() for e in started)  # not ours to stop
    code, _, err = run(capsys, *RUN, *_attach(addresses), "--store", str(store), "--shutdown-engines")
    assert code == 0, err
    assert all(e.stopped.wait(5) for e in started)  # asked: stopped


def test_engines_that_do_not_match_the_cluster_are_named(capsys, engines):
    addresses, store, _ = engines
    code, _, err = run(capsys, *RUN, *_attach(addresses[:1]), "--store", str(store))
    assert code == 2 and err.strip().endswith("--engines lacks DE0") and "1 PE and 1 DE" in err
    code, _, err = run(capsys, *RUN, *_attach(addresses), "--store", str(store), "--seed", "5")
    assert code == 2 and f"engine at {addresses[0][0]}:{addresses[0][1]} (PE0): seed = '0'" in err
    code, _, err = run(capsys, *RUN, *_attach(addresses), "--store", str(store), "--block-tokens", "32")
    assert code == 2 and "block_tokens = 64: expected the run's --block-tokens, 32" in err
    code, _, err = run(capsys, *RUN, "--cluster", "examples/clusters/qwen-1p2d.toml", *_attach(addresses),
                       "--store", str(store))
    assert code == 2 and "has 8 PE and 16 DE engines; --engines lacks PE1, PE2" in err and err.count("\n") == 1


@pytest.mark.parametrize(("role", "name", "node", "message"), [
    ("prefill", "PE9", "P0", "name = 'PE9': expected one of the cluster's engines: PE0, DE0"),
    ("prefill", "DE0", "D0", "(DE0): role = 'prefill': expected decode, as the cluster says"),
    ("prefill", "PE0", "P7", "(PE0): node = 'P7': expected P0, as the cluster says (--node)"),
])
def test_an_engine_the_cluster_does_not_have_is_refused_in_one_line(capsys, engines, role, name, node, message):
    addresses, store, _ = engines
    stranger = create_engine(EngineOptions(role=role, name=name, node=node, store_dir=str(store), block_tokens=64),
                             KEY)
    try:
        stranger.start()
        code, _, err = run(capsys, *RUN, *_attach([stranger.address, *addresses]), "--store", str(store))
        assert code == 2 and message in err and err.count("\n") == 1
    finally:
        stranger.close()


def test_a_wrong_secret_is_refused_in_one_line(capsys, monkeypatch, engines):
    addresses, store, _ = engines
    monkeypatch.setenv("DUALPATH_SECRET", "cd" * 32)
    code, _, err = run(capsys, *RUN, *_attach(addresses), "--store", str(store))
    assert code == 2 and "does not answer" in err and "wrong cluster secret?" in err and err.count("\n") == 1


def test_an_unreachable_engine_is_one_line_naming_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DUALPATH_SECRET", SECRET)
    port = _free_port()
    code, _, err = run(capsys, *RUN, "--engines", f"127.0.0.1:{port},127.0.0.1:{_free_port()}",
                       "--store", str(tmp_path))
    assert code == 2 and err.startswith(f"dualpath: error: engine at 127.0.0.1:{port} does not answer")
    assert err.count("\n") == 1


@pytest.mark.parametrize(("extra", "message"), [
    (["--inject", "kill-engine:DE0@1s"], "--inject cannot be used with --engines"),
    (["--in-process"], "--in-process cannot be used with --engines"),
    (["--transport", "verbs"], "--transport cannot be used with --engines"),
    ([], "--engines needs --store DIR"),
])
def test_what_needs_local_engines_is_refused_with_engines(capsys, tmp_path, monkeypatch, extra, message):
    monkeypatch.setenv("DUALPATH_SECRET", SECRET)
    store = [] if not extra else ["--store", str(tmp_path)]
    code, out, err = run(capsys, *RUN, "--engines", "127.0.0.1:7100,127.0.0.1:7101", *store, *extra)
    assert code == 2 and message in err and err.count("\n") == 1 and out == ""


def test_flags_of_attaching_need_engines_and_a_secret(capsys, tmp_path, monkeypatch):
    code, _, err = run(capsys, *RUN, "--store", str(tmp_path))
    assert code == 2 and "--store goes with --engines" in err
    monkeypatch.delenv("DUALPATH_SECRET", raising=False)
    code, _, err = run(capsys, *RUN, "--engines", "127.0.0.1:7100", "--store", str(tmp_path))
    assert code == 2 and err.strip() == ("dualpath: error: --engines: set $DUALPATH_SECRET to the cluster secret "
                                         "the engines were started with")
    code, _, err = run(capsys, *RUN, "--engines", "127.0.0.1", "--store", str(tmp_path))
    assert code == 2 and "HOST:PORT of a running engine" in err


def test_engine_commands_print_what_a_local_run_would_start(capsys, tmp_path):
    code, out, _ = run(capsys, *RUN, "--engine-commands", str(tmp_path / "shared"), "--base-port", "9000")
    assert code == 0
    lines = out.splitlines()
    engines = [line for line in lines if line.startswith("dualpath engine")]
    assert len(engines) == 2 and all('--host "$HOST"' in line for line in engines)
    assert "--name PE0" in engines[0] and "--port 9000" in engines[0] and "--port 9001" in engines[1]
    assert (tmp_path / "shared" / "model.json").exists() and (tmp_path / "shared" / "store").is_dir()
    assert lines[-1].endswith(f"--engines '<P0>:9000,<D0>:9001' --store {tmp_path / 'shared' / 'store'}")


def test_an_engine_refuses_a_wildcard_bind():
    with pytest.raises(ValueError, match="one address of this machine that its peers can reach"):
        EngineOptions(role="prefill", name="PE0", store_dir="/nonexistent", host="0.0.0.0")
