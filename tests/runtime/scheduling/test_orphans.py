"""Engines die with their launcher: a `dualpath run` killed (SIGKILL) or terminated (SIGTERM) leaves no
engine process and no run directory (its /dev/shm store included) behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualpath.runtime.engines.lifeline import (
    DEATH_SIGNAL,
    EXIT_GRACE_S,
    MARKER,
    POLL_S,
    Lifeline,
    launcher_env,
    mark_run_dir,
    set_parent_death_signal,
    sweep_stale_runs,
)
from tests.paths import EXAMPLES

pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SHM = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
RUN = [sys.executable, "-m", "dualpath.cli", "run", "--cluster", str(EXAMPLES / "clusters" / "local-1p1d.toml"),
       "--agents", "16", "--turns", "4", "--scale", "8", "--policy", "dualpath", "--timeout-s", "120"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its new parent may be slow to reap it)


def _engines_of(parent: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (proc / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent and b"dualpath.runtime.engine" in cmdline:
                pids.append(int(proc.name))
    return pids


def _listening(pid: int) -> bool:
    """Both of an engine's listeners are open (control and data): it is up."""
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return False
    return sum(link.startswith("socket:") for link in links) >= 2


def _run_dir_of(launcher: int) -> Path | None:
    for path in (SHM or Path("/tmp")).glob("dualpath-run-*"):
        try:
            if (path / MARKER).read_text().strip() == str(launcher):
                return path
        except OSError:
            continue
    return None


def _start_run() -> tuple[subprocess.Popen, list[int], Path]:
    run = subprocess.Popen(RUN, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    engines: list[int] = []
    while time.monotonic() < deadline:
        engines = _engines_of(run.pid)
        if len(engines) == 2 and all(_listening(pid) for pid in engines):
            break
        assert run.poll() is None, run.communicate()[1].decode()
        time.sleep(0.05)
    else:
        run.kill()
        pytest.fail("the engines did not come up within 60 s")
    run_dir = _run_dir_of(run.pid)
    assert run_dir is not None and (run_dir / "store").is_dir()
    return run, engines, run_dir


def _gone_within(engines: list[int], run_dir: Path, seconds: float) -> tuple[list[int], bool]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (any(_alive(pid) for pid in engines) or run_dir.exists()):
        time.sleep(0.05)
    return [pid for pid in engines if _alive(pid)], run_dir.exists()


@pytest.mark.slow
def test_a_killed_run_leaves_no_engine_and_no_run_directory():
    run, engines, run_dir = _start_run()
    try:
        os.kill(run.pid, signal.SIGKILL)  # nothing in it runs: the engines notice alone
        run.wait(timeout=30)
        # An engine busy in a step may take until its forced exit: the promise is the grace, not less
        # (a loaded 2-core CI box once saw an engine outlive a 10 s wait).
        left, dir_left = _gone_within(engines, run_dir, EXIT_GRACE_S + POLL_S + 5.0)
        assert left == [] and not dir_left, f"engines {left} alive, {run_dir} present: {dir_left}"
    finally:
        for pid in engines:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_terminated_run_stops_its_engines_and_removes_its_directory():
    """SIGTERM to `dualpath run` ends it like an error would: engines stopped, directory gone, 128 + 15.

    The run is a subprocess: with `--in-process` engines, a torch thread still running when the process
    exits can abort it (C++ `terminate`), which must not take the test session down with it."""
    run, engines, run_dir = _start_run()
    try:
        os.kill(run.pid, signal.SIGTERM)
        code = run.wait(timeout=30)
        left, dir_left = _gone_within(engines, run_dir, 10.0)
        assert code == 128 + signal.SIGTERM, run.communicate()[1].decode()[-2000:]
        assert left == [] and not dir_left, f"engines {left} alive, {run_dir} present: {dir_left}"
    finally:
        for pid in engines:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_lifeline_checks_its_launcher_and_sweeps_what_dead_launchers_left(tmp_path):
    assert launcher_env()["DUALPATH_LAUNCHER_PID"] == str(os.getpid())
    here = Lifeline({"DUALPATH_LAUNCHER_PID": str(os.getppid())})
    assert here.start(lambda: None, exit_grace_s=None) and not here.orphaned
    here.close()
    gone = Lifeline({"DUALPATH_LAUNCHER_PID": "1"})  # not our parent: this process is "orphaned"
    assert not gone.start(lambda: None, exit_grace_s=None) and gone.orphaned
    assert Lifeline({}).start(lambda: None, exit_grace_s=None)  # started by hand, not by a launcher: no tie at all
    # The parent-death signal can come while the dying launcher's last threads still hold its pid:
    # the signal itself says the launcher is gone.
    woken = []
    previous = signal.getsignal(DEATH_SIGNAL)
    tied = Lifeline({"DUALPATH_LAUNCHER_PID": str(os.getppid()), "DUALPATH_PDEATHSIG": str(int(DEATH_SIGNAL))})
    try:
        assert tied.start(lambda: woken.append(True), exit_grace_s=None) and not tied.orphaned
        os.kill(os.getpid(), DEATH_SIGNAL)
        assert tied.orphaned and woken
    finally:
        tied.close()
        set_parent_death_signal(0)
        signal.signal(DEATH_SIGNAL, previous)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale, live, foreign = tmp_path / "dualpath-run-a", tmp_path / "dualpath-run-b", tmp_path / "dualpath-run-c"
    for path in (stale, live, foreign):
        path.mkdir()
    (stale / MARKER).write_text(dead.stdout)
    mark_run_dir(live)
    assert sweep_stale_runs(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and foreign.exists()  # no marker: not ours to judge
