"""Three-valued property results: proved, violated (with a concrete witness) or unknown."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum


class Status(str, Enum):
    PROVED = "proved"
    VIOLATED = "violated"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PropertyResult:
    """One question of the report and its answer.

    `witness` is concrete (a table entry, a backlog set, a trace) when violated; `detail` carries the
    evidence when proved and the reason when unknown; `fix` names the config line to change.
    """

    name: str
    family: str
    question: str
    status: Status
    witness: str | dict | None = None
    fix: str | None = None
    detail: str = ""
    time_s: float = 0.0

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "question": self.question,
            "status": self.status.value,
            "witness": self.witness,
            "fix": self.fix,
            "detail": self.detail,
            "time_s": round(self.time_s, 6),
        }


def proved(name: str, family: str, question: str, detail: str = "") -> PropertyResult:
    return PropertyResult(name, family, question, Status.PROVED, detail=detail)


def violated(name: str, family: str, question: str, witness: str | dict, fix: str,
             detail: str = "") -> PropertyResult:
    return PropertyResult(name, family, question, Status.VIOLATED, witness=witness, fix=fix, detail=detail)


def unknown(name: str, family: str, question: str, reason: str) -> PropertyResult:
    return PropertyResult(name, family, question, Status.UNKNOWN, detail=reason)


def timed(check: Callable[..., PropertyResult], *args, **kwargs) -> PropertyResult:
    """Run one property check and stamp the wall time it took."""
    start = time.perf_counter()
    result = check(*args, **kwargs)
    return replace(result, time_s=time.perf_counter() - start)

