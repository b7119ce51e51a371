"""Deadlock proof of the runtime's transfer protocol: coverage of the core's definitions, the proof,
the counterexample of the admission-free variant (replayed on the core's Ledger), altered protocols.
"""

from dataclasses import replace

import pytest

from dualpath.errors import UnknownNameError
from dualpath.proofs.abstraction import Abstraction
from dualpath.proofs.channel_graph import check_channel_graph
from dualpath.proofs.deadlock import prove
from dualpath.proofs.deadlock_trace import Search, find_deadlock
from dualpath.proofs.protocol_check import check_deadlock
from dualpath.proofs.protocol_model import build_model
from dualpath.proofs.result import Status
from dualpath.protocol import (
    ALL_STEP_NAMES,
    Amount,
    Ledger,
    Phase,
    ReadPath,
    RequestSizes,
    Resource,
    Step,
    transfer_steps,
)


@pytest.mark.parametrize("admission", [True, False])
def test_encoding_covers_every_phase_and_step_of_the_core_protocol(admission):
    # Fails when the core gains a phase or step the proofs do not encode.
    model = build_model(admission)
    assert model.phases() == set(Phase)
    assert model.step_names() == set(ALL_STEP_NAMES)
    assert set(model.resources()) == set(Resource)


def test_abstraction_has_a_place_for_every_phase_and_a_move_for_every_step():
    a = Abstraction(build_model(True))
    assert {p.phase for p in a.places} == set(Phase)
    assert {m.step.name for m in a.moves if m.step is not None} == set(ALL_STEP_NAMES)
    assert set(a.blockers) == {p.key for p in a.places if p.request and not p.terminal}


def test_admission_protocol_is_proved_for_any_number_of_requests():
    result = prove(build_model(True))
    assert result.verdict == "proved" and result.obligations > 40
    prop = check_deadlock("default")
    assert prop.status is Status.PROVED and "any number of requests" in prop.detail


def test_without_admission_the_pe_slot_de_buffer_cycle_is_found():
    prop = check_deadlock("no-admission")
    assert prop.status is Status.VIOLATED
    witness = prop.witness
    requests = " ".join(witness["requests"])
    assert "pe-read" in requests and "de-read" in requests
    assert "waits for de_buffer held by r1" in witness["cycle"]
    assert "waits for pe_hbm_slot held by r0" in witness["cycle"]
    assert any("layer_load" in line for line in witness["trace"]) and "admission rule" in prop.fix


def replay(trace, admission: bool) -> Ledger:
    """Run the trace through the core's Ledger: every step must fit, and at the end nothing can move."""
    ledger = Ledger(capacity={(Resource(r), "owner"): cap for r, cap in trace.capacities.items()})
    sizes, steps = [], []
    for path, amounts in zip(trace.paths, trace.amounts):
        s = RequestSizes(amounts["hit_bytes"], amounts["prompt_bytes"], amounts["context_bytes"],
                         len(amounts["layer_bytes"]))
        assert [s.of(Amount.LAYER_BYTES, k) for k in range(s.num_layers)] == amounts["layer_bytes"]
        sizes.append(s)
        steps.append({step.name: step for step in transfer_steps(path, admission)})

    def wants(i, name, layer):
        return [(r, "owner", sizes[i].of(a, layer or 0)) for r, a in steps[i][name].acquire]

    for i, name, layer in trace.actions:
        assert ledger.try_acquire(f"r{i}", wants(i, name, layer)), (i, name, layer)
        for r, a in steps[i][name].release:
            ledger.release(f"r{i}", r, "owner", sizes[i].of(a, layer or 0))
    assert trace.blocked
    for i, name, layer in trace.blocked:
        assert not ledger.can_acquire(wants(i, name, layer)), (i, name, layer)
    return ledger


def test_counterexample_replays_on_the_core_ledger():
    trace = find_deadlock(build_model(False))
    ledger = replay(trace, admission=False)
    assert ledger.used[(Resource.PE_HBM_SLOT, "owner")] == trace.capacities["pe_hbm_slot"]


def test_bounded_search_finds_nothing_for_the_admission_protocol():
    # Exhaustive for one PE-read and one DE-read request with one layer: traces are at most 18 steps long.
    assert Search(build_model(True), (ReadPath.PE, ReadPath.DE), num_layers=1).find() is None


def reserve_de_buffer_late(path: ReadPath, admission: bool) -> tuple[Step, ...]:
    """An altered protocol that keeps the token discipline but takes the DE buffer at the wrong time:
    DE-read requests hold it from their read; PE-read layers take it per layer while holding a slot."""
    out = []
    for s in transfer_steps(path, True):
        if s.name == "admit":
            s = replace(s, acquire=tuple(t for t in s.acquire if t[0] is not Resource.DE_BUFFER))
        elif s.name == "read" and path is ReadPath.DE:
            s = replace(s, acquire=((Resource.DE_BUFFER, Amount.PROMPT_BYTES),))
        elif s.name == "layer_send" and path is ReadPath.PE:
            s = replace(s, acquire=(*s.acquire, (Resource.DE_BUFFER, Amount.LAYER_BYTES)))
        elif s.name == "layer_done" and path is ReadPath.PE:
            s = replace(s, release=(*s.release, (Resource.DE_BUFFER, Amount.LAYER_BYTES)))
        elif s.name == "start_decode" and path is ReadPath.PE:
            s = replace(s, release=())
        out.append(s)
    return tuple(out)


def test_an_altered_protocol_that_can_deadlock_is_refuted_not_proved():
    model = build_model(True, reserve_de_buffer_late)
    assert model.problems == ()
    assert prove(model).verdict == "refuted" and prove(model).failed == "deadlock"
    prop = check_deadlock("default", reserve_de_buffer_late)
    assert prop.status is Status.VIOLATED and "de_buffer" in prop.witness["cycle"]
    assert check_channel_graph(model).status is Status.VIOLATED


def test_a_new_step_is_encoded_and_a_leaking_one_is_not_proved():
    def with_checksum(path, admission):
        steps = list(transfer_steps(path, admission))
        steps.insert(2, Step("checksum", Phase.READING, Phase.READING))
        return tuple(steps)

    model = build_model(True, with_checksum)
    assert "checksum" in model.step_names() and prove(model).verdict == "proved"

    def with_pin(path, admission):  # takes an HBM slot while reading and never gives it back
        steps = list(transfer_steps(path, admission))
        steps.insert(2, Step("pin", Phase.READING, Phase.READING, acquire=((Resource.PE_HBM_SLOT, Amount.ONE),)))
        return tuple(steps)

    assert any("still holds pe_hbm_slot" in p for p in build_model(True, with_pin).problems)
    prop = check_deadlock("default", with_pin)
    assert prop.status is Status.VIOLATED and "pin" in " ".join(prop.witness["trace"])


def test_a_protocol_shape_the_proof_does_not_know_is_unknown():
    def scattered_loop(path, admission):
        steps = list(transfer_steps(path, admission))
        steps[4] = replace(steps[4], repeats_per_layer=False)  # layer_send no longer repeats
        return tuple(steps)

    assert check_deadlock("default", scattered_loop).status is Status.UNKNOWN


def test_unknown_protocol_name():
    with pytest.raises(UnknownNameError, match="default, no-admission"):
        check_deadlock("optimistic")
