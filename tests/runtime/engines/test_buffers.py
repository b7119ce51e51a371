"""Buffer pool: real pages behind the core Ledger, driven by the protocol's own steps."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualpath.errors import SpecError
from dualpath.protocol import ProtocolError, ReadPath, RequestSizes, Resource, transfer_steps
from dualpath.runtime.engines.buffers import BufferPool, BufferTimeoutError, Memory
from tests.cuda import needs_cuda

PAGE = 4096


def _pool() -> BufferPool:
    pool = BufferPool()
    pool.add_paged(Resource.PE_BUFFER, "pe-node", PAGE, 8)
    pool.add_paged(Resource.DE_BUFFER, "de-node", PAGE, 16)
    pool.add_slots(Resource.PE_HBM_SLOT, "pe0", 2 * PAGE, 2)
    pool.add_counter(Resource.SEND_CREDIT, "pe0", 2)
    pool.add_counter(Resource.DE_HBM, "de0", 1 << 20)
    return pool


OWNERS = {Resource.PE_BUFFER: "pe-node", Resource.DE_BUFFER: "de-node", Resource.PE_HBM_SLOT: "pe0",
          Resource.SEND_CREDIT: "pe0", Resource.DE_HBM: "de0"}


@pytest.mark.parametrize("path", list(ReadPath))
def test_a_request_walks_the_protocol_and_frees_everything(path):
    pool = _pool()
    sizes = RequestSizes(hit_bytes=3 * PAGE, prompt_bytes=4 * PAGE, context_bytes=5 * PAGE, num_layers=4)
    steps = transfer_steps(path)
    head = [s for s in steps if not s.repeats_per_layer and s.name in ("admit", "read", "start_prefill")]
    layer = [s for s in steps if s.repeats_per_layer]
    tail = [s for s in steps if not s.repeats_per_layer and s.name not in ("admit", "read", "start_prefill")]
    for step in head:
        pool.step("r1", step, sizes, OWNERS, timeout_s=1)
    assert pool.used(Resource.DE_BUFFER, "de-node") == 4 * PAGE
    assert pool.used(Resource.PE_BUFFER, "pe-node") == (3 * PAGE if path is ReadPath.PE else 0)
    for _ in range(sizes.num_layers):
        for step in layer:
            leases = pool.step("r1", step, sizes, OWNERS, timeout_s=1)
            if step.name == "layer_load":
                (slot,) = leases
                slot.view(0)[:5] = b"layer"  # the slot's memory is real and writable
    assert pool.used(Resource.PE_HBM_SLOT, "pe0") == 0
    for step in tail:
        pool.step("r1", step, sizes, OWNERS, timeout_s=1)
    for key in pool.ledger.capacity:
        assert pool.ledger.used[key] == 0, key
    assert pool.leases("r1") == []


def test_no_admission_variant_releases_layer_pieces_together():
    pool = _pool()
    sizes = RequestSizes(hit_bytes=2 * PAGE, prompt_bytes=4 * PAGE, context_bytes=5 * PAGE, num_layers=4)
    steps = {step.name: step for step in transfer_steps(ReadPath.PE, admission=False)}
    for name in ("admit", "read", "start_prefill"):
        pool.step("r", steps[name], sizes, OWNERS)
    for _ in range(sizes.num_layers):
        for name in ("layer_load", "layer_send", "layer_done"):
            pool.step("r", steps[name], sizes, OWNERS)
    assert len(pool.leases("r", Resource.DE_BUFFER)) == 4  # one layer-sized piece per layer
    for name in ("handoff", "start_decode", "finish"):
        pool.step("r", steps[name], sizes, OWNERS)
    assert pool.leases("r") == []
    assert all(used == 0 for used in pool.ledger.used.values())


def test_release_splits_a_larger_lease():
    pool = _pool()
    pool.acquire("r", [(Resource.DE_BUFFER, "de-node", 4 * PAGE)])
    (freed,) = pool.release("r", Resource.DE_BUFFER, "de-node", PAGE)
    assert len(freed.pages) == 1
    (kept,) = pool.leases("r")
    assert len(kept.pages) == 3 and kept.charged == 3 * PAGE
    assert pool.used(Resource.DE_BUFFER, "de-node") == 3 * PAGE


def test_leases_are_disjoint_real_memory():
    pool = _pool()
    a = pool.acquire("a", [(Resource.DE_BUFFER, "de-node", 3 * PAGE)])[0]
    b = pool.acquire("b", [(Resource.DE_BUFFER, "de-node", 2 * PAGE)])[0]
    assert not set(a.pages) & set(b.pages)
    for i, view in enumerate(a.views()):
        view[:] = bytes([i + 1]) * PAGE
    for view in b.views():
        view[:] = b"\xff" * PAGE
    assert [bytes(v[:1]) for v in a.views()] == [b"\x01", b"\x02", b"\x03"]
    memory = pool.entry(Resource.DE_BUFFER, "de-node").memory
    assert bytes(memory.view[a.offsets[1] : a.offsets[1] + 1]) == b"\x02"


def test_byte_amounts_are_charged_in_whole_pages():
    pool = _pool()
    (lease,) = pool.acquire("r", [(Resource.PE_BUFFER, "pe-node", PAGE + 1)])
    assert len(lease.pages) == 2
    assert pool.used(Resource.PE_BUFFER, "pe-node") == 2 * PAGE
    pool.release("r", Resource.PE_BUFFER, "pe-node", PAGE + 1)
    assert pool.used(Resource.PE_BUFFER, "pe-node") == 0


def test_all_or_nothing():
    pool = _pool()
    pool.acquire("hog", [(Resource.SEND_CREDIT, "pe0", 2)])
    got = pool.try_acquire("r", [(Resource.DE_BUFFER, "de-node", PAGE), (Resource.SEND_CREDIT, "pe0", 1)])
    assert got is None
    assert pool.used(Resource.DE_BUFFER, "de-node") == 0
    assert len(pool.entry(Resource.DE_BUFFER, "de-node").free_pages) == 16


def test_acquire_blocks_until_release_and_times_out():
    pool = _pool()
    pool.acquire("hog", [(Resource.PE_HBM_SLOT, "pe0", 2)])
    with pytest.raises(BufferTimeoutError, match="pe_hbm_slot/pe0"):
        pool.acquire("r", [(Resource.PE_HBM_SLOT, "pe0", 1)], timeout_s=0.05)
    threading.Timer(0.05, pool.release_all, args=("hog",)).start()
    began = time.monotonic()
    pool.acquire("r", [(Resource.PE_HBM_SLOT, "pe0", 1)], timeout_s=5)
    assert time.monotonic() - began >= 0.03


def test_release_all_frees_pages_and_ledger():
    pool = _pool()
    pool.acquire("r", [(Resource.DE_BUFFER, "de-node", 5 * PAGE), (Resource.SEND_CREDIT, "pe0", 1)])
    assert pool.release_all("r") == 2
    assert pool.used(Resource.DE_BUFFER, "de-node") == 0
    assert len(pool.entry(Resource.DE_BUFFER, "de-node").free_pages) == 16
    assert pool.release_all("r") == 0


def test_protocol_errors():
    pool = _pool()
    with pytest.raises(ProtocolError, match="exceeds capacity"):
        pool.try_acquire("r", [(Resource.PE_BUFFER, "pe-node", 9 * PAGE)])
    with pytest.raises(ProtocolError, match="no pe_buffer declared"):
        pool.try_acquire("r", [(Resource.PE_BUFFER, "elsewhere", 1)])
    with pytest.raises(ProtocolError, match="but holds 0"):
        pool.release("r", Resource.SEND_CREDIT, "pe0", 1)
    with pytest.raises(SpecError, match="declared once"):
        pool.add_counter(Resource.SEND_CREDIT, "pe0", 3)
    with pytest.raises(SpecError, match="num_pages"):
        pool.add_paged(Resource.PE_BUFFER, "n2", PAGE, 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(1, 6 * PAGE)), max_size=40))
def test_pages_and_ledger_always_agree(actions):
    pool = BufferPool()
    pool.add_paged(Resource.DE_BUFFER, "d", PAGE, 12)
    entry = pool.entry(Resource.DE_BUFFER, "d")
    for acquire, who, nbytes in actions:
        request = f"r{who}"
        if acquire:
            pool.try_acquire(request, [(Resource.DE_BUFFER, "d", nbytes)])
        else:
            pool.release_all(request)
        leased = [page for r in range(6) for lease in pool.leases(f"r{r}") for page in lease.pages]
        assert len(leased) == len(set(leased))
        assert sorted(leased + entry.free_pages) == list(range(12))
        assert pool.used(Resource.DE_BUFFER, "d") == len(leased) * PAGE


def test_memory_wraps_share_storage():
    raw = bytearray(64)
    mem = Memory.wrap(raw)
    mem.view[0] = 7
    assert raw[0] == 7 and mem.device == "cpu" and not mem.on_device
    numpy = pytest.importorskip("numpy")
    arr = numpy.zeros(16, dtype=numpy.float32)
    assert Memory.wrap(arr).nbytes == 64
    torch = pytest.importorskip("torch")
    tensor = torch.zeros(8, dtype=torch.bfloat16)
    wrapped = Memory.wrap(tensor)
    wrapped.view[:2] = b"\x80\x3f"  # bfloat16 1.0
    assert float(tensor[0]) == 1.0
    host = Memory.allocate(32)
    host.tensor[0] = 9
    assert host.view[0] == 9
    assert host.ptr == Memory.wrap(host.view).ptr
    with pytest.raises(SpecError):
        Memory.wrap(bytes(4))


@pytest.mark.gpu
@needs_cuda  # host buffers are pinned only on CUDA
def test_cuda_host_buffers_are_pinned_and_hbm_slots_on_device():
    pool = BufferPool()
    host = pool.add_paged(Resource.PE_BUFFER, "n", PAGE, 4, device="cuda:0")
    slots = pool.add_slots(Resource.PE_HBM_SLOT, "pe0", PAGE, 2, device="cuda:0")
    assert host.pinned and host.tensor.is_pinned() and host.view is not None
    assert slots.on_device and slots.tensor.is_cuda
    (lease,) = pool.acquire("r", [(Resource.PE_HBM_SLOT, "pe0", 1)])
    with pytest.raises(ProtocolError, match="no host memory"):
        lease.view(0)
