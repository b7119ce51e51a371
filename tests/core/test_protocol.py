from itertools import pairwise

import pytest

from dualpath.protocol import (
    ALL_STEP_NAMES,
    Amount,
    Ledger,
    Phase,
    ProtocolError,
    ReadPath,
    RequestSizes,
    Resource,
    transfer_steps,
)


def test_steps_are_a_path_from_waiting_to_done():
    for path in ReadPath:
        for admission in (True, False):
            steps = transfer_steps(path, admission)
            assert steps[0].source is Phase.WAITING and steps[-1].target is Phase.DONE
            for a, b in pairwise(steps):
                assert a.target is b.source
            assert tuple(s.name for s in steps) == ALL_STEP_NAMES


@pytest.mark.parametrize("path", list(ReadPath))
@pytest.mark.parametrize("admission", [True, False])
def test_every_acquire_is_released_by_the_end(path, admission):
    sizes = RequestSizes(hit_bytes=1000, prompt_bytes=1103, context_bytes=1300, num_layers=4)
    held: dict = {}
    for step in transfer_steps(path, admission):
        reps = sizes.num_layers if step.repeats_per_layer else 1
        for layer in range(reps):
            for res, amt in step.acquire:
                held[res] = held.get(res, 0) + sizes.of(amt, layer)
                assert held[res] >= 0
            for res, amt in step.release:
                held[res] = held.get(res, 0) - sizes.of(amt, layer)
                assert held[res] >= 0, (step.name, res)
    assert all(v == 0 for v in held.values()), held


def test_admission_reserves_de_side_before_any_read():
    admit = transfer_steps(ReadPath.DE, admission=True)[0]
    assert (Resource.DE_HBM, Amount.CONTEXT_BYTES) in admit.acquire
    assert (Resource.DE_BUFFER, Amount.PROMPT_BYTES) in admit.acquire


def test_ledger_is_all_or_nothing_and_release_all_frees_everything():
    ledger = Ledger(capacity={(Resource.DE_BUFFER, "D0"): 100, (Resource.DE_HBM, "DE0"): 50})
    assert ledger.try_acquire("r1", [(Resource.DE_BUFFER, "D0", 60), (Resource.DE_HBM, "DE0", 50)])
    assert not ledger.try_acquire("r2", [(Resource.DE_BUFFER, "D0", 30), (Resource.DE_HBM, "DE0", 1)])
    assert ledger.used[(Resource.DE_BUFFER, "D0")] == 60
    ledger.release("r1", Resource.DE_HBM, "DE0", 50)
    with pytest.raises(ProtocolError):
        ledger.release("r1", Resource.DE_HBM, "DE0", 1)
    ledger.release_all("r1")
    assert ledger.used[(Resource.DE_BUFFER, "D0")] == 0 and "r1" not in ledger.held
    with pytest.raises(ProtocolError, match="exceeds capacity"):
        ledger.try_acquire("r3", [(Resource.DE_BUFFER, "D0", 101)])
