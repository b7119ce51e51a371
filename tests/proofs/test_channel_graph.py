"""Channel dependency graph of the protocol: acyclic with admission, the slot/buffer cycle without."""

from dualpath.proofs.channel_graph import check_channel_graph, dependency_graph, simple_cycles
from dualpath.proofs.protocol_model import build_model
from dualpath.proofs.result import Status
from dualpath.protocol import Resource

R = Resource


def test_admission_protocol_acquires_in_one_global_order():
    model = build_model(True)
    edges = dependency_graph(model)
    assert (R.DE_BUFFER, R.PE_HBM_SLOT) in edges and (R.PE_HBM_SLOT, R.SEND_CREDIT) in edges
    assert (R.PE_HBM_SLOT, R.DE_BUFFER) not in edges
    result = check_channel_graph(model)
    assert result.status is Status.PROVED and "pe_hbm_slot -> send_credit" in result.detail


def test_without_admission_the_cycle_is_named_with_its_steps():
    result = check_channel_graph(build_model(False))
    assert result.status is Status.VIOLATED
    cycle = result.witness["cycle"]
    assert cycle.startswith("de_buffer -> pe_hbm_slot (") and "pe_hbm_slot -> de_buffer (" in cycle
    assert "de-read loader at layer_load" in cycle and "pe-read worker at layer_send" in cycle
    assert "de_buffer -> de_buffer" in " ".join(result.witness["all_cycles"])


def test_simple_cycles_lists_each_elementary_cycle_once():
    edges = {(R.PE_BUFFER, R.DE_HBM): [], (R.DE_HBM, R.PE_BUFFER): [], (R.DE_HBM, R.DE_HBM): [],
             (R.DE_HBM, R.SEND_CREDIT): []}
    cycles = simple_cycles(edges)
    assert sorted(map(tuple, cycles)) == sorted([(R.DE_HBM, R.PE_BUFFER), (R.DE_HBM,)])
    assert simple_cycles({(R.PE_BUFFER, R.DE_HBM): []}) == []
