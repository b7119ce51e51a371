"""An engine's tie to the process that launched it: engines die with their launcher, and the last of
them removes the run's directory.

A launcher (`dualpath.runtime.scheduling.launcher.spawn_engine`) puts `launcher_env(...)` in each
engine's environment. The engine process then (`Lifeline.start`, early in its `main`):
- asks Linux for `DEATH_SIGNAL` when its parent dies (`prctl(PR_SET_PDEATHSIG)`), only when the
  launcher spawned it from its main thread: the signal follows the thread that forked, and a helper
  thread that ends would take the engine with it. It is a signal of its own, not SIGTERM, because it
  can arrive while the dying launcher's other threads still hold its pid (`getppid()` unchanged):
  receiving it is what says the launcher is gone;
- checks right after that its parent is still the launcher (it may have died before the `prctl`);
- polls its parent pid every `POLL_S` (the only check without `prctl`, or when spawned off the main
  thread): a changed parent means the launcher is gone, whatever killed it, SIGKILL included.
Either way the engine stops as on SIGTERM, and, when the launcher owned a run directory (`RUN_DIR_ENV`,
with a marker naming the launcher's pid), removes it on its way out: every engine tries, so the
last one out leaves nothing behind, `/dev/shm` store included. `sweep_stale_runs` removes what
engines killed outright could not.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

LOG = logging.getLogger("dualpath.runtime.engines.lifeline")
LAUNCHER_PID_ENV = "DUALPATH_LAUNCHER_PID"
PDEATHSIG_ENV = "DUALPATH_PDEATHSIG"
RUN_DIR_ENV = "DUALPATH_RUN_DIR"
MARKER = ".dualpath-launcher"  # in a run directory: the pid of the launcher that owns it
DEATH_SIGNAL = signal.SIGUSR1
POLL_S = 0.5
EXIT_GRACE_S = 10.0  # an orphaned engine that has not closed by then exits anyway (after cleaning up)
_PR_SET_PDEATHSIG = 1


def launcher_env(run_dir: Path | None = None) -> dict[str, str]:
    """Environment for an engine spawned by this process now (see the module docstring)."""
    env = {LAUNCHER_PID_ENV: str(os.getpid())}
    if threading.current_thread() is threading.main_thread():
        env[PDEATHSIG_ENV] = str(int(DEATH_SIGNAL))
    if run_dir is not None:
        env[RUN_DIR_ENV] = str(run_dir)
    return env


def mark_run_dir(run_dir: Path) -> None:
    """Record this process as the owner of `run_dir` (what engines check before removing it)."""
    (run_dir / MARKER).write_text(f"{os.getpid()}\n")


def set_parent_death_signal(sig: int) -> bool:
    """`prctl(PR_SET_PDEATHSIG, sig)`; False where that does not exist (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(run_dir: Path) -> int | None:
    try:
        text = (run_dir / MARKER).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isascii() and text.isdigit() else None


def sweep_stale_runs(parent: Path, prefix: str = "dualpath-run-") -> list[Path]:
    """Remove this user's run directories under `parent` whose launcher is dead; returns them."""
    removed = []
    with contextlib.suppress(OSError):
        for path in parent.glob(f"{prefix}*"):
            with contextlib.suppress(OSError):
                if path.is_dir() and path.stat().st_uid == os.getuid():
                    owner = _owner_pid(path)
                    if owner is not None and not _pid_alive(owner):
                        shutil.rmtree(path, ignore_errors=True)
                        removed.append(path)
    return removed


class Lifeline:
    """This engine process's tie to its launcher (inert when no launcher set the environment)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        pid = env.get(LAUNCHER_PID_ENV, "")
        self.launcher_pid = int(pid) if pid.isascii() and pid.isdigit() else None
        sig = env.get(PDEATHSIG_ENV, "")
        self.death_signal = int(sig) if sig.isascii() and sig.isdigit() else None
        run_dir = env.get(RUN_DIR_ENV, "")
        self.run_dir = Path(run_dir) if run_dir else None
        self._owns_run_dir = False  # the marker named our launcher when we started
        self._orphaned = threading.Event()
        self._closed = threading.Event()

    @property
    def orphaned(self) -> bool:
        """The launcher is gone (checked now)."""
        if self.launcher_pid is not None and os.getppid() != self.launcher_pid:
            self._orphaned.set()
        return self._orphaned.is_set()

    def start(self, on_orphan: Callable[[], None], exit_grace_s: float | None = EXIT_GRACE_S) -> bool:
        """Arm the parent-death signal (call from the main thread: it installs a handler) and the
        watch; False when the launcher is already gone (the caller stops at once). `on_orphan` may
        run in a signal handler: it should only set events. Once orphaned, the process exits after
        `exit_grace_s` whatever it is doing (None: never forced)."""
        if self.launcher_pid is None:
            return True
        # Checked once, now: an engine that outlives another one's cleanup may recreate parts of the
        # directory (its store), and must remove them even though the marker is gone by then.
        self._owns_run_dir = self.run_dir is not None and _owner_pid(self.run_dir) == self.launcher_pid
        if self.death_signal is not None and threading.current_thread() is threading.main_thread():

            def launcher_died(*_: object) -> None:
                self._orphaned.set()
                on_orphan()

            signal.signal(self.death_signal, launcher_died)  # before the prctl: its default would kill us
            set_parent_death_signal(self.death_signal)
        if self.orphaned:  # died between our fork and the prctl: no signal will come
            return False

        def watch() -> None:
            while not self.orphaned:
                if self._closed.wait(POLL_S):
                    return
            LOG.warning("launcher (pid %s) is gone: stopping", self.launcher_pid)
            if exit_grace_s is not None:
                give_up = threading.Timer(exit_grace_s, self._give_up)
                give_up.daemon = True
                give_up.start()
            on_orphan()

        threading.Thread(target=watch, name="lifeline", daemon=True).start()
        return True

    def close(self) -> None:
        """Stop watching (the engine is stopping anyway)."""
        self._closed.set()

    def _give_up(self) -> None:
        LOG.warning("not stopped in time after the launcher went: exiting")
        self.cleanup()
        os._exit(1)

    def cleanup(self) -> None:
        """Once orphaned: remove the launcher's run directory (if it owned one and still marks it)."""
        if self.run_dir is not None and self._owns_run_dir and self.orphaned:
            LOG.warning("removing the run directory %s of the launcher (pid %s)", self.run_dir, self.launcher_pid)
            shutil.rmtree(self.run_dir, ignore_errors=True)
