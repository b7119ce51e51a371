"""The deadlock family of the report: the counting proof, the counterexample search, the graph check."""

from __future__ import annotations

from dataclasses import replace

from dualpath.errors import UnknownNameError
from dualpath.proofs.abstraction import Abstraction
from dualpath.proofs.channel_graph import check_channel_graph
from dualpath.proofs.deadlock import prove
from dualpath.proofs.deadlock_trace import find_deadlock
from dualpath.proofs.protocol_model import ModelError, StepsFn, build_model
from dualpath.proofs.result import PropertyResult, Status, proved, unknown, violated
from dualpath.protocol import transfer_steps

PROTOCOLS = {"default": True, "no-admission": False}  # name -> admission rule on
NAME, FAMILY = "deadlock_free", "deadlock"
FIX = ("--protocol default: the admission rule (dualpath/protocol.py, transfer_steps(admission=True)) reserves "
       "DE HBM for the context and DE buffer for the prompt before any read, so no request holds a layer slot "
       "while waiting for DE buffer space")


def admission_of(protocol: str) -> bool:
    if protocol not in PROTOCOLS:
        raise UnknownNameError("protocol", protocol, tuple(PROTOCOLS))
    return PROTOCOLS[protocol]


_cache: dict[str, PropertyResult] = {}


def check_deadlock(protocol: str, steps_fn: StepsFn = transfer_steps) -> PropertyResult:
    """`steps_fn` is the core's `transfer_steps`; tests pass altered protocols to see them caught.

    The core protocol cannot change while a process runs, so its answer is computed once per process.
    """
    if steps_fn is transfer_steps:
        if protocol not in _cache:
            _cache[protocol] = _check_deadlock(protocol, steps_fn)
            return _cache[protocol]
        return replace(_cache[protocol], detail=_cache[protocol].detail + " (proved earlier in this process)"
                       if _cache[protocol].status is Status.PROVED else _cache[protocol].detail)
    return _check_deadlock(protocol, steps_fn)


def _check_deadlock(protocol: str, steps_fn: StepsFn) -> PropertyResult:
    admission = admission_of(protocol)
    question = (f"Is the transfer protocol ({protocol}) deadlock-free: can in-flight requests never all wait "
                "on each other, for any number of requests, capacities and sizes?")
    try:
        model = build_model(admission, steps_fn)
    except ModelError as exc:
        return unknown(NAME, FAMILY, question, f"the protocol has a shape the proof does not encode: {exc}")
    if not model.problems:
        result = prove(model)
        if result.verdict == "proved":
            places = len(Abstraction(model).places)
            return proved(NAME, FAMILY, question,
                          f"inductive invariant over a counting abstraction of {places} places: any number of "
                          "requests sharing one PE engine/node and one DE engine/node, every capacity in [1, inf), "
                          "request sizes >= 1 that fit, any layer count; loads run ahead, one worker per request; "
                          f"{result.obligations} obligations (init, every move, no deadlock state) discharged by Z3")
        if result.verdict == "unknown":
            return unknown(NAME, FAMILY, question, result.failed)
        if result.failed != "deadlock":
            return unknown(NAME, FAMILY, question, f"the invariant is not inductive for {result.failed}")
        reason = "the invariant admits a deadlock state"
    else:
        reason = "; ".join(model.problems)
    trace = find_deadlock(model)
    if trace is None:
        return unknown(NAME, FAMILY, question, f"{reason}; no deadlock of two requests within 16 steps either")
    return violated(NAME, FAMILY, question, trace.to_witness(), FIX,
                    detail=f"the counting proof does not apply: {reason}")


def check_channels(protocol: str, steps_fn: StepsFn = transfer_steps) -> PropertyResult:
    try:
        return check_channel_graph(build_model(admission_of(protocol), steps_fn))
    except ModelError as exc:
        return unknown("channel_dependency_acyclic", FAMILY, "Is the channel dependency graph acyclic?", str(exc))
