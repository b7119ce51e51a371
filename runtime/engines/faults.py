"""Fault injection for real runs: `kill-engine:DE0@5s` and `corrupt-block:0.01`, reproducible.

- `kill-engine:NAME@T` kills engine NAME's process (SIGKILL, no goodbye) T seconds into the run
  (`5s`, `500ms`, `2.5`). Its in-flight requests fail on their connections, the scheduler notices the
  engine no longer answers, never assigns it work again, and resubmits those requests elsewhere.
- `corrupt-block:P` makes each block read find a corrupted file with probability P: a byte of the
  payload on disk is flipped just before the read, so the block store's real per-layer checksum
  rejects it; the engine drops the block and recomputes its tokens. Draws are a hash of the seed,
  the block id and how often this engine read it, so a run with the same seed corrupts the same reads.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dualpath.errors import SpecError
from dualpath.runtime.engines.blockstore import BlockStore, header_bytes

_KILL = re.compile(r"^kill-engine:([A-Za-z][A-Za-z0-9_-]*)@(\d+(?:\.\d*)?)(ms|s)?$")
_CORRUPT = re.compile(r"^corrupt-block:(\d*\.?\d+(?:e-?\d+)?)$")
FORMS = "kill-engine:ENGINE@SECONDS (e.g. kill-engine:DE0@5s) or corrupt-block:RATE (e.g. corrupt-block:0.01)"


@dataclass(frozen=True)
class KillEngine:
    engine: str
    at_s: float


@dataclass(frozen=True)
class FaultPlan:
    kills: tuple[KillEngine, ...] = ()
    corrupt_block_rate: float = 0.0
    seed: int = 0

    @property
    def empty(self) -> bool:
        return not self.kills and not self.corrupt_block_rate

    def describe(self) -> list[str]:
        out = [f"kill-engine:{k.engine}@{k.at_s:g}s" for k in self.kills]
        return out + ([f"corrupt-block:{self.corrupt_block_rate:g}"] if self.corrupt_block_rate else [])


def parse_faults(specs: Sequence[str], seed: int = 0, engines: Sequence[str] | None = None) -> FaultPlan:
    """`--inject` values to a `FaultPlan`; `engines` (names) checks that a killed engine exists."""
    kills, rate = [], 0.0
    for spec in specs:
        text = spec.strip()
        if match := _KILL.match(text):
            at_s = float(match.group(2)) / (1000.0 if match.group(3) == "ms" else 1.0)
            name = match.group(1)
            if engines is not None and name not in engines:
                raise SpecError("--inject", "engine", name, "one of the cluster's engines: " + ", ".join(engines))
            kills.append(KillEngine(name, at_s))
        elif match := _CORRUPT.match(text):
            rate = float(match.group(1))
            if not 0.0 < rate <= 1.0:
                raise SpecError("--inject", "corrupt-block rate", rate, "a fraction in (0, 1]")
        else:
            raise SpecError("--inject", "fault", spec, FORMS)
    return FaultPlan(tuple(sorted(kills, key=lambda k: (k.at_s, k.engine))), rate, seed)


def draw(seed: int, *parts: object) -> float:
    """A uniform number in [0, 1) from a hash: the same inputs always give the same number."""
    digest = hashlib.blake2b(":".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class CorruptingStore(BlockStore):
    """A block store whose reads find a corrupted file with probability `rate` (see the module doc)."""

    def __init__(self, *args, rate: float, seed: int = 0, **kwargs) -> None:
        kwargs.setdefault("scan", False)
        super().__init__(*args, **kwargs)
        self.rate, self.seed = rate, seed
        self.reads: Counter[str] = Counter()
        self.corrupted: list[str] = []
        self._faults_lock = threading.Lock()

    def read_into(self, block_id: str, out) -> int:
        with self._faults_lock:
            self.reads[block_id] += 1
            nth = self.reads[block_id]
        if draw(self.seed, block_id, nth) < self.rate:
            self._flip_byte(block_id, nth)
        return super().read_into(block_id, out)

    def _flip_byte(self, block_id: str, nth: int) -> None:
        path = self.path_of(block_id)
        offset = header_bytes(self.layout.num_layers) + int(draw(self.seed, "at", block_id, nth)
                                                            * self.layout.full_block_bytes)
        try:
            with open(path, "r+b") as f:
                f.seek(offset)
                byte = f.read(1)
                if len(byte) == 1:
                    f.seek(offset)
                    f.write(bytes([byte[0] ^ 0xFF]))
        except FileNotFoundError:
            return  # already gone: the read reports a missing block
        with self._faults_lock:
            self.corrupted.append(block_id)


@dataclass
class FaultInjector:
    """Runs a plan's kills on a timer from the run's start; `kill(name)` does the killing."""

    plan: FaultPlan
    kill: Callable[[str], None]
    fired: list[tuple[str, float]] = field(default_factory=list)
    _timers: list[threading.Timer] = field(default_factory=list)

    def start(self, origin: float | None = None) -> None:
        origin = time.time() if origin is None else origin
        for k in self.plan.kills:
            timer = threading.Timer(max(0.0, origin + k.at_s - time.time()), self._fire, args=(k.engine, origin))
            timer.daemon = True
            timer.start()
            self._timers.append(timer)

    def _fire(self, engine: str, origin: float) -> None:
        # Recorded before the kill returns: closing an engine waits for its forward in flight, and a run
        # that ends meanwhile must still report the fault as fired.
        self.fired.append((engine, time.time() - origin))
        self.kill(engine)

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
