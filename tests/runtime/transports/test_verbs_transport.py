"""Verbs backend: what can be checked without a device always runs; the rest needs pyverbs and a NIC.

The transport contract itself (writes, batches, immediates, refusal of a wrong secret) runs against
verbs in tests/runtime/transports/test_tcp_transport.py, parametrized over both backends.
"""

from __future__ import annotations

import importlib
import importlib.util

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualpath.errors import MissingExtraError
from dualpath.runtime.transports import verbs_transport
from dualpath.runtime.transports.transport import TransportError, create_transport
from dualpath.runtime.transports.verbs_gid import GidEntry, choose_gid, find_gid, gid_text
from dualpath.runtime.transports.verbs_qp import PYVERBS_ENUMS, PYVERBS_NAMES, device_unavailable_reason, verbs_enums
from dualpath.runtime.transports.verbs_wire import QPInfo, RegionInfo

SECRET = b"test-cluster-secret-0123456789"
GID = "fe80:0000:0000:0000:0202:c9ff:fe00:0001"


def _has_pyverbs() -> bool:
    try:
        importlib.import_module("pyverbs")
    except ImportError:
        return False
    return True


needs_pyverbs = pytest.mark.skipif(not _has_pyverbs(), reason="pyverbs is not installed (make test-rdma)")
REASON = device_unavailable_reason()


def _native_load_error() -> str | None:
    """Why pyverbs' compiled modules cannot load here (rdma-core 59's libibverbs missing), or None."""
    if not _has_pyverbs():
        return "pyverbs is not installed"
    try:
        importlib.import_module("pyverbs.device")
    except ImportError as exc:
        return f"pyverbs' native modules cannot load ({exc}); they need rdma-core 59's libibverbs"
    return None


NATIVE_ERROR = _native_load_error()
needs_native = pytest.mark.skipif(NATIVE_ERROR is not None, reason=str(NATIVE_ERROR))
needs_device = pytest.mark.skipif(REASON is not None, reason=f"needs an RDMA device: {REASON}")


def test_qp_info_round_trip():
    info = QPInfo(qp_num=0x12345, lid=7, gid=GID, psn=0xABCDE, mtu=3)
    assert QPInfo.decode(info.encode()) == info


@given(st.integers(0, 2**24 - 1), st.integers(0, 2**16 - 1), st.binary(min_size=16, max_size=16),
       st.integers(0, 2**24 - 1), st.integers(1, 5))
def test_qp_info_round_trips_for_every_valid_value(qp_num, lid, raw_gid, psn, mtu):
    hexgid = raw_gid.hex()
    gid = ":".join(hexgid[i : i + 4] for i in range(0, 32, 4))
    info = QPInfo(qp_num, lid, gid, psn, mtu)
    assert QPInfo.decode(info.encode()) == info


def test_qp_info_rejects_bad_values_and_bytes():
    with pytest.raises(TransportError, match="qp_num"):
        QPInfo(2**24, 0, GID, 0, 3).encode()
    with pytest.raises(TransportError, match="gid"):
        QPInfo(1, 0, "fe80::1", 0, 3).encode()
    good = QPInfo(1, 2, GID, 3, 3).encode()
    with pytest.raises(TransportError, match="bytes"):
        QPInfo.decode(good[:-1])
    with pytest.raises(TransportError, match="magic"):
        QPInfo.decode(b"XXXX" + good[4:])


def test_region_info_round_trip_and_errors():
    info = RegionInfo("de-buffer/layer-3", 4, 1 << 30, 0x7F00_0000_1000, 0xDEADBEEF)
    assert RegionInfo.decode(info.encode()) == info
    with pytest.raises(TransportError, match="malformed"):
        RegionInfo.decode(info.encode() + b"!")
    with pytest.raises(TransportError, match="shorter"):
        RegionInfo.decode(b"DPRG")


V2, V1 = "RoCEv2", "RoCEv1"
LINK_LOCAL, MAPPED = gid_text("fe80::1"), gid_text("::ffff:10.0.0.1")
GLOBAL = gid_text("2001:db8::7")


def test_gid_text_spells_any_ipv6_form_as_pyverbs_does():
    assert MAPPED == "0000:0000:0000:0000:0000:ffff:0a00:0001"
    assert gid_text(MAPPED) == MAPPED
    with pytest.raises(TransportError, match="not an IPv6-style address"):
        gid_text("10.0.0.1")


def test_automatic_gid_prefers_roce_v2_then_ipv4_mapped_then_global_then_link_local():
    # The order RoCE tables list them in: link-local first, then each address, v1 before v2.
    table = [GidEntry(0, LINK_LOCAL, V1), GidEntry(1, LINK_LOCAL, V2), GidEntry(2, GLOBAL, V1),
             GidEntry(3, GLOBAL, V2), GidEntry(4, MAPPED, V1), GidEntry(5, MAPPED, V2)]
    assert choose_gid(table, ethernet=True).index == 5
    assert choose_gid(table[:4], ethernet=True).index == 3
    assert choose_gid(table[:2], ethernet=True).index == 1  # link-local v2 beats link-local v1
    assert choose_gid([GidEntry(4, MAPPED, V1)], ethernet=True).index == 4  # v1-only NICs still work
    ib = [GidEntry(0, "fe80:0000:0000:0000:0002:c903:0000:0001", "IB"), GidEntry(1, GLOBAL, "IB")]
    assert choose_gid(ib, ethernet=False).index == 0
    with pytest.raises(TransportError, match="no valid entry"):
        choose_gid([GidEntry(0, "0000:0000:0000:0000:0000:0000:0000:0000", V2)], ethernet=True)


def test_explicit_gid_is_found_by_any_spelling_and_refused_when_absent():
    table = [GidEntry(0, LINK_LOCAL, V2), GidEntry(1, MAPPED, V1), GidEntry(2, MAPPED, V2)]
    assert find_gid(table, "::ffff:10.0.0.1").index == 2
    assert find_gid(table, "fe80::1").index == 0
    with pytest.raises(TransportError, match=r"not in the port's GID table \(valid entries: 0=fe80"):
        find_gid(table, "2001:db8::1")


def test_module_imports_without_pyverbs_and_names_the_extra():
    assert verbs_transport.VerbsTransport.kind == "verbs"
    if not _has_pyverbs():
        with pytest.raises(MissingExtraError, match="rdma"):
            create_transport("verbs", "x", SECRET)


@pytest.mark.rdma
@needs_pyverbs
@needs_native
def test_pyverbs_imports():
    for module in sorted({module for module, _ in PYVERBS_NAMES}):
        importlib.import_module(module)


@pytest.mark.rdma
@needs_pyverbs
@pytest.mark.parametrize("module, name", PYVERBS_NAMES, ids=[f"{m}.{n}" for m, n in PYVERBS_NAMES])
def test_every_pyverbs_name_the_backend_uses_exists(module, name):
    if NATIVE_ERROR is None:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name} is gone"
        return
    # The compiled module cannot load without rdma-core 59's libibverbs, but Cython keeps every
    # attribute name as a string in the extension: its absence means the name is gone.
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{module} is not part of the installed pyverbs"
    with open(spec.origin, "rb") as f:
        assert name.encode() in f.read(), f"{module}.{name} is gone"


@pytest.mark.rdma
@needs_pyverbs
@pytest.mark.parametrize("name", PYVERBS_ENUMS)
def test_every_libibverbs_enum_the_backend_uses_exists(name):
    if NATIVE_ERROR is None:
        assert isinstance(getattr(verbs_enums(), name, None), int), f"enum member {name} is gone"
        return
    spec = importlib.util.find_spec("pyverbs.libibverbs_enums")
    assert spec is not None and spec.origin
    with open(spec.origin, "rb") as f:
        assert name.encode() in f.read(), f"enum member {name} is gone"


@pytest.mark.rdma
@needs_pyverbs
@needs_native
def test_qp_exchange_encoding_agrees_with_pyverbs():
    """Our GID text survives pyverbs' own GID parser, and every MTU enum fits the wire field."""
    from pyverbs.addr import GID as PyverbsGID

    e = verbs_enums()

    info = QPInfo.decode(QPInfo(0xABCDE, 3, GID, 77, e.IBV_MTU_4096).encode())
    assert PyverbsGID(info.gid).gid == GID
    for mtu in (e.IBV_MTU_256, e.IBV_MTU_512, e.IBV_MTU_1024, e.IBV_MTU_2048, e.IBV_MTU_4096):
        assert QPInfo.decode(QPInfo(1, 0, GID, 0, mtu).encode()).mtu == mtu
    region = RegionInfo("kv", 1, 4096, 0x7F00_0000_0000, 0x1234)
    assert RegionInfo.decode(region.encode()) == region


@pytest.mark.rdma
@needs_pyverbs
def test_device_probe_gives_a_reason_or_a_device():
    reason = device_unavailable_reason()
    assert reason is None or "RDMA device" in reason or "get_device_list" in reason or "RDMA libraries" in reason


@pytest.mark.rdma
@needs_device
def test_loopback_copy_through_the_nic():
    from dualpath.runtime.engines.buffers import Memory
    from dualpath.runtime.transports.transport import CopyOp

    transport = create_transport("verbs", "e0", SECRET, cnic_centric=True)
    src = transport.register("src", Memory.wrap(bytearray(b"kv" * 2048)))
    dst = transport.register("dst", Memory.allocate(4096))
    transport.copy_local([CopyOp(dst, 0, src, 0, 4096)])
    assert dst.memory.view == src.memory.view
    transport.close()
