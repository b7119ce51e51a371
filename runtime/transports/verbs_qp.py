"""Verbs queue pairs: pyverbs loading, device probing, and the opened device (`VerbsDevice`: context,
protection domain, GID choice, memory registration and RC QP setup, each QP with its own CQs).

pyverbs is imported lazily (`make test-rdma` installs it); `PYVERBS_NAMES` lists every pyverbs name
the verbs backend uses so a test can check them without a device. pyverbs ships no type information,
so its objects are `Any` here.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import random
from types import SimpleNamespace
from typing import Any

from dualpath.errors import require
from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.transports.transport_types import LocalRegion, TransportError
from dualpath.runtime.transports.verbs_gid import ZERO_GID, GidEntry, choose_gid, find_gid
from dualpath.runtime.transports.verbs_wire import QPInfo, RegionInfo

PYVERBS_NAMES = (
    ("pyverbs.device", "get_device_list"), ("pyverbs.device", "Context"), ("pyverbs.pd", "PD"),
    ("pyverbs.mr", "MR"), ("pyverbs.cq", "CQ"), ("pyverbs.qp", "QP"), ("pyverbs.qp", "QPInitAttr"),
    ("pyverbs.qp", "QPCap"), ("pyverbs.qp", "QPAttr"), ("pyverbs.wr", "SendWR"), ("pyverbs.wr", "RecvWR"),
    ("pyverbs.wr", "SGE"), ("pyverbs.addr", "AHAttr"), ("pyverbs.addr", "GlobalRoute"),
    ("pyverbs.addr", "GID"), ("pyverbs.device", "translate_gid_type"),
    ("pyverbs.pyverbs_error", "PyverbsError"),
)
# libibverbs enum members the backend uses; pyverbs 59 exports them inside enum classes (see verbs_enums).
PYVERBS_ENUMS = (
    "IBV_QPT_RC", "IBV_ACCESS_LOCAL_WRITE", "IBV_ACCESS_REMOTE_WRITE", "IBV_WR_RDMA_WRITE",
    "IBV_WR_RDMA_WRITE_WITH_IMM", "IBV_SEND_SIGNALED", "IBV_WC_SUCCESS", "IBV_WC_RECV_RDMA_WITH_IMM",
    "IBV_PORT_ACTIVE", "IBV_LINK_LAYER_ETHERNET",
)
MAX_WR = 1024  # send WRs a QP may have outstanding (the poster waits for room beyond that)
NUM_RECV = 512  # receives posted on each QP: writes with an immediate in flight to it


def pyverbs_module(module: str) -> Any:
    """Import a pyverbs module, or raise `MissingExtraError` naming the "rdma" extra."""
    require("pyverbs", "rdma")
    return importlib.import_module(module)


def verbs_enums() -> SimpleNamespace:
    """Every libibverbs enum member by name (`.IBV_QPT_RC`). Built with Cython 3, pyverbs 59 exports them
    only inside their enum classes (`ibv_qp_type.IBV_QPT_RC`); a few constants stay module-level."""
    module = pyverbs_module("pyverbs.libibverbs_enums")
    members = {name: getattr(module, name) for name in dir(module) if name.startswith("IBV_")}
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, enum.Enum):
            for name, member in value.__members__.items():
                members.setdefault(name, member)
    return SimpleNamespace(**members)


def device_unavailable_reason() -> str | None:
    """Why verbs cannot run here (None when pyverbs and an RDMA device are both present)."""
    if importlib.util.find_spec("pyverbs") is None:
        return "pyverbs is not installed (make test-rdma installs it)"
    try:
        device = importlib.import_module("pyverbs.device")
    except ImportError as exc:  # installed, but rdma-core 59's libibverbs/librdmacm are not
        return f"pyverbs cannot load its RDMA libraries: {exc}"
    errors = importlib.import_module("pyverbs.pyverbs_error")
    try:
        devices = device.get_device_list()
    except (errors.PyverbsError, OSError) as exc:  # no kernel driver, no uverbs device nodes
        return f"get_device_list() failed: {exc}"
    return None if devices else "no RDMA device (get_device_list() returned nothing)"


def rdma_devices() -> list[str]:
    """Names of RDMA devices ([] when pyverbs is installed but none exists)."""
    return [dev.name.decode() for dev in pyverbs_module("pyverbs.device").get_device_list()]


class QueuePair:
    """An RC QP with completion queues of its own, sized for everything it can have outstanding:
    MAX_WR send completions (a QP in error flushes every WR) and NUM_RECV receive completions. A CQ
    shared by all QPs would have to grow with the number of peers, or overflow and break them all."""

    def __init__(self, qp: Any, send_cq: Any, recv_cq: Any) -> None:
        self.qp, self.send_cq, self.recv_cq = qp, send_cq, recv_cq
        self.qp_num: int = qp.qp_num

    def close(self) -> None:
        """Destroy the QP, then its CQs (a CQ still attached to a QP cannot be destroyed)."""
        for obj in (self.qp, self.send_cq, self.recv_cq):
            obj.close()


class VerbsDevice:
    """One port of an RDMA device, opened: context, protection domain, the GID it is addressed by, and
    the small MR that posted receives point at (writes with an immediate land in the target region;
    the receive only carries the immediate).

    `device` defaults to the first RDMA device. The GID is `gid` (an address in the port's table) or
    entry `gid_index` when either is given, else `choose_gid`'s pick (RoCE v2, routable addresses first).
    `owner` (the transport's name) prefixes errors.
    """

    def __init__(self, owner: str, device: str | None, ib_port: int, gid_index: int | None, gid: str | None,
                 sl: int) -> None:
        d, e = pyverbs_module("pyverbs.device"), verbs_enums()
        self.owner = owner
        self.e = e
        names = rdma_devices()
        if not names:
            raise TransportError("no RDMA device found (get_device_list() is empty)")
        if device is not None and device not in names:
            raise TransportError(f"{owner}: no RDMA device {device!r} (devices: {', '.join(names)})")
        self.name = device or names[0]
        self.ctx = d.Context(name=self.name)
        self.ib_port, self.sl = ib_port, sl
        self.port_attr = self.ctx.query_port(ib_port)
        if self.port_attr.state != e.IBV_PORT_ACTIVE:
            raise TransportError(f"{self.name} port {ib_port} is not active")
        chosen = self._pick_gid(gid_index, gid)
        self.gid_index, self.gid, self.gid_type = chosen.index, chosen.gid, chosen.gid_type
        self.pd = pyverbs_module("pyverbs.pd").PD(self.ctx)
        mr_cls = pyverbs_module("pyverbs.mr").MR
        self.recv_mr = mr_cls(self.pd, 64, e.IBV_ACCESS_LOCAL_WRITE)

    def gid_table(self) -> list[GidEntry]:
        """The valid entries of this port's GID table, in one query (rxe tables have 1,024 slots)."""
        d = pyverbs_module("pyverbs.device")
        num_ports = self.ctx.query_device().phys_port_cnt
        entries = self.ctx.query_gid_table(num_ports * self.port_attr.gid_tbl_len)
        return [GidEntry(entry.gid_index, entry.gid_str(), d.translate_gid_type(entry.gid_type))
                for entry in entries if entry.port_num == self.ib_port]

    def _pick_gid(self, gid_index: int | None, gid: str | None) -> GidEntry:
        if gid_index is not None and gid is not None:
            raise TransportError(f"{self.owner}: give gid or gid_index, not both")
        entries = self.gid_table()
        if gid is not None:
            return find_gid(entries, gid)
        if gid_index is not None:
            for entry in entries:
                if entry.index == gid_index:
                    return entry
            raise TransportError(f"{self.owner}: {self.name} port {self.ib_port} has no valid GID at index "
                                 f"{gid_index} (valid: {', '.join(str(entry.index) for entry in entries) or 'none'})")
        return choose_gid(entries, self.port_attr.link_layer == self.e.IBV_LINK_LAYER_ETHERNET)

    def close(self) -> None:
        self.ctx.close()

    # -- memory ------------------------------------------------------------------------------------
    def register(self, name: str, memory: Memory) -> Any:
        """Register `memory` for local and remote writes; returns its pyverbs MR."""
        e = self.e
        access = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE
        try:
            return pyverbs_module("pyverbs.mr").MR(self.pd, memory.nbytes, access, address=memory.ptr)
        except pyverbs_module("pyverbs.pyverbs_error").PyverbsError as exc:
            hint = " (GPU memory needs GPUDirect RDMA: nvidia-peermem)" if memory.on_device else ""
            raise TransportError(f"{self.owner}: cannot register region {name!r}{hint}: {exc}") from exc

    @staticmethod
    def region_info(region: LocalRegion) -> RegionInfo:
        return RegionInfo(region.name, region.region_id, region.nbytes, region.memory.ptr,
                          region.backend.rkey)

    # -- queue pairs -------------------------------------------------------------------------------
    def create_qp(self) -> tuple[QueuePair, QPInfo]:
        """A new RC QP with its own CQs and every receive posted, and the `QPInfo` its peer needs."""
        qp_mod, e = pyverbs_module("pyverbs.qp"), self.e
        cq_cls = pyverbs_module("pyverbs.cq").CQ
        send_cq, recv_cq = cq_cls(self.ctx, MAX_WR), cq_cls(self.ctx, NUM_RECV)
        cap = qp_mod.QPCap(max_send_wr=MAX_WR, max_recv_wr=NUM_RECV, max_send_sge=1, max_recv_sge=1)
        init = qp_mod.QPInitAttr(qp_type=e.IBV_QPT_RC, scq=send_cq, rcq=recv_cq, cap=cap, sq_sig_all=0)
        attr = qp_mod.QPAttr(port_num=self.ib_port)
        attr.qp_access_flags = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE
        qp = qp_mod.QP(self.pd, init, attr)
        wr_mod = pyverbs_module("pyverbs.wr")
        for i in range(NUM_RECV):
            sge = wr_mod.SGE(self.recv_mr.buf, 64, self.recv_mr.lkey)
            qp.post_recv(wr_mod.RecvWR(wr_id=i, num_sge=1, sg=[sge]))
        return QueuePair(qp, send_cq, recv_cq), QPInfo(qp.qp_num, self.port_attr.lid, self.gid,
                                                        random.getrandbits(24), self.port_attr.active_mtu)

    def to_rts(self, pair: QueuePair, local: QPInfo, remote: QPInfo) -> None:
        """Connect `qp` (ours, described by `local`) to the peer's QP `remote` and make it ready to send."""
        qp_mod, addr = pyverbs_module("pyverbs.qp"), pyverbs_module("pyverbs.addr")
        attr = qp_mod.QPAttr(port_num=self.ib_port)
        attr.qp_access_flags = self.e.IBV_ACCESS_LOCAL_WRITE | self.e.IBV_ACCESS_REMOTE_WRITE
        attr.path_mtu = min(local.mtu, remote.mtu)
        attr.dest_qp_num, attr.rq_psn, attr.sq_psn = remote.qp_num, remote.psn, local.psn
        attr.max_dest_rd_atomic = attr.max_rd_atomic = 1
        attr.min_rnr_timer, attr.timeout, attr.retry_cnt, attr.rnr_retry = 12, 14, 7, 7
        is_global = int(remote.gid != ZERO_GID)
        route = addr.GlobalRoute(dgid=addr.GID(remote.gid), sgid_index=self.gid_index) if is_global else None
        attr.ah_attr = addr.AHAttr(port_num=self.ib_port, is_global=is_global, gr=route, dlid=remote.lid,
                                   sl=self.sl)
        pair.qp.to_rts(attr)
