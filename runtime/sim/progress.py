"""A one-line progress bar on stderr for long simulations (shown on a TTY, or when asked)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

ProgressFn = Callable[[int, int, float], None]  # (done, total, simulated seconds)


class ProgressBar:
    """Redraws at most every `interval_s` wall seconds and only after `delay_s` (short runs stay quiet)."""

    def __init__(self, label: str = "simulate", stream: TextIO | None = None, delay_s: float = 2.0,
                 interval_s: float = 0.25, force: bool = False) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = force or bool(getattr(self.stream, "isatty", lambda: False)())
        self.delay_s = delay_s
        self.interval_s = interval_s
        self.started = time.perf_counter()
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int, sim_s: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.started < self.delay_s or (now - self._last < self.interval_s and done < total):
            return
        self._last = now
        frac = done / total if total else 1.0
        filled = int(frac * 30)
        bar = "#" * filled + "-" * (30 - filled)
        rate = done / (now - self.started)
        self.stream.write(f"\r{self.label} [{bar}] {frac:6.1%} {done:,}/{total:,} requests, "
                          f"t={sim_s:,.0f}s sim, {rate:,.0f} req/s")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def make_progress(progress: bool | ProgressFn | None, label: str) -> tuple[ProgressFn | None, Callable[[], None]]:
    """Normalise `simulate(progress=...)`: None/False off, True forced bar, a callable used as is."""
    if progress is None:
        bar = ProgressBar(label)
        return (bar if bar.enabled else None), bar.close
    if progress is True:
        bar = ProgressBar(label, force=True)
        return bar, bar.close
    if progress is False:
        return None, lambda: None
    return progress, lambda: None
