"""Engines across machines, on one machine: PE, DE and scheduler each in its own network namespace,
joined by veth pairs to a bridge in a fourth, with private addresses and no route anywhere else.

The engines are started from the commands `dualpath run --engine-commands` prints, bound to their
veth addresses, and `dualpath run --engines` attaches to them from the scheduler's namespace. The run
must verify (every turn equal to a full recompute) and the KV must really have crossed the veths:
the DE's interface receives at least the bytes the PE read from storage for it. Everything the test
creates (namespaces, veths, bridge, processes) is removed however it ends.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from dualpath.cli import main
from dualpath.runtime.engines.lifeline import launcher_env
from tests.paths import EXAMPLES

DUALPATH = str(Path(sys.executable).with_name("dualpath"))
SUBNET = "10.213.0"
ADDRESSES = {"pe": f"{SUBNET}.1", "de": f"{SUBNET}.2", "sc": f"{SUBNET}.3"}
RUN = ["--cluster", str(EXAMPLES / "clusters" / "local-1p1d.toml"), "--model", "tiny", "--agents", "2",
       "--turns", "3", "--scale", "64", "--seed", "3"]
READY_TIMEOUT_S = 60.0


def _why_no_netns() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "creating network namespaces and veths needs root (CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to create namespaces with"
    name = f"dp-probe-{secrets.token_hex(3)}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns add` fails here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


WHY = _why_no_netns()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")


def ip(*args: str, ns: str | None = None) -> str:
    cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


class Topology:
    """Namespaces pe, de, sc, each with veth `v<role><sfx>` to a bridge in namespace br."""

    def __init__(self) -> None:
        self.sfx = secrets.token_hex(3)
        self.ns = {role: f"dp-{role}-{self.sfx}" for role in ("pe", "de", "sc", "br")}
        self.created: list[str] = []

    def veth(self, role: str) -> str:
        return f"v{role}{self.sfx}"

    def build(self) -> None:
        for ns in self.ns.values():
            ip("netns", "add", ns)
            self.created.append(ns)
            ip("link", "set", "lo", "up", ns=ns)
        br = self.ns["br"]
        ip("link", "add", "br0", "type", "bridge", ns=br)
        ip("link", "set", "br0", "up", ns=br)
        for role, address in ADDRESSES.items():
            port = f"b{role}{self.sfx}"
            # Both ends are born inside the test's namespaces: nothing touches this machine's own.
            ip("link", "add", self.veth(role), "netns", self.ns[role], "type", "veth", "peer", "name", port,
               "netns", br, ns=br)
            ip("link", "set", port, "master", "br0", ns=br)
            ip("link", "set", port, "up", ns=br)
            ip("addr", "add", f"{address}/24", "dev", self.veth(role), ns=self.ns[role])
            ip("link", "set", self.veth(role), "up", ns=self.ns[role])

    def bytes(self, role: str) -> tuple[int, int]:
        """(rx, tx) bytes of the role's veth, read inside its namespace."""
        stats = f"/sys/class/net/{self.veth(role)}/statistics"
        out = subprocess.run(["ip", "netns", "exec", self.ns[role], "cat", f"{stats}/rx_bytes", f"{stats}/tx_bytes"],
                             capture_output=True, text=True, check=True).stdout.split()
        return int(out[0]), int(out[1])

    def remove(self) -> None:
        for ns in self.created:
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
                subprocess.run(["kill", "-9", pid], capture_output=True)  # only this test's processes live here
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # its veths and bridge go with it


def _start_engine(ns: str, line: str, address: str, env: dict, log: Path) -> subprocess.Popen:
    args = shlex.split(line.replace('"$HOST"', address))
    assert args[:2] == ["dualpath", "engine"]
    with open(log, "wb") as err:
        return subprocess.Popen(["ip", "netns", "exec", ns, DUALPATH, *args[1:], "--log-level", "WARNING"],
                                stdout=subprocess.PIPE, stderr=err, env=env, text=True)


def _wait_ready(process: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("READY "):
            return line.split(maxsplit=1)[1].strip()
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"engine did not start: {log.read_text(errors='replace')[-2000:]}")


def test_pe_de_and_scheduler_in_separate_namespaces_move_kv_over_veths(tmp_path, capsys):
    shared = tmp_path / "shared"  # every namespace sees this machine's filesystem: the "shared mount"
    assert main(["run", *RUN, "--engine-commands", str(shared)]) == 0
    printed = capsys.readouterr().out.splitlines()
    commands = [line for line in printed if line.startswith("dualpath engine")]
    assert [c.split()[5] for c in commands] == ["PE0", "DE0"] and len(commands) == 2
    env = {**os.environ, "DUALPATH_SECRET": secrets.token_hex(32), **launcher_env(None)}  # engines die with us
    topo = Topology()
    engines: list[subprocess.Popen] = []
    try:
        topo.build()
        for ns in (topo.ns["pe"], topo.ns["de"], topo.ns["sc"]):
            assert "default" not in ip("route", ns=ns)  # nothing can leave this machine
        for role, line in zip(("pe", "de"), commands):
            engines.append(_start_engine(topo.ns[role], line, ADDRESSES[role], env, tmp_path / f"{role}.log"))
        ready = [_wait_ready(e, tmp_path / f"{r}.log") for e, r in zip(engines, ("pe", "de"))]
        assert ready == [f"{ADDRESSES['pe']} 7100", f"{ADDRESSES['de']} 7101"]
        before = {role: topo.bytes(role) for role in ADDRESSES}
        out = tmp_path / "run.json"
        run = subprocess.run(
            ["ip", "netns", "exec", topo.ns["sc"], DUALPATH, "run", *RUN, "--policy", "layerwise,dualpath",
             "--verify", "--json", str(out), "--store", str(shared / "store"),
             "--engines", f"{ADDRESSES['pe']}:7100,{ADDRESSES['de']}:7101"],
            capture_output=True, text=True, env=env, timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        after = {role: topo.bytes(role) for role in ADDRESSES}
        assert all(e.poll() is None for e in engines)  # attached, so left running
    finally:
        for engine in engines:
            engine.terminate()
        for engine in engines:
            try:
                engine.wait(10)
            except subprocess.TimeoutExpired:
                engine.kill()
                engine.wait()
        topo.remove()
    assert not any(ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
                   for ns in topo.ns.values())
    results = {r["policy"]: r for r in json.loads(out.read_text())["results"]}
    for r in results.values():
        assert r["lost_turns"] == 0 and r["wrong_turns"] == [] and r["turns"] > 0
    # Under layerwise every hit block is read by the PE and sent to the DE: those bytes, at least, crossed.
    pe_read = sum(rec["pe_read_bytes"] for rec in results["layerwise"]["trace"]["records"])
    de_rx = after["de"][0] - before["de"][0]
    pe_tx = after["pe"][1] - before["pe"][1]
    assert pe_read > 100_000 and de_rx > pe_read and pe_tx > pe_read, (pe_read, de_rx, pe_tx)
    assert after["sc"][1] > before["sc"][1]  # the scheduler's control traffic went out of its namespace too
