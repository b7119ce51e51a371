"""Verbs queue pairs: pyverbs loading, device probing, and the opened device (`VerbsDevice`: context,
protection domain, completion queues, memory registration and RC QP setup).

pyverbs is imported lazily (`make test-rdma` installs it); `PYVERBS_NAMES` lists every pyverbs name
the verbs backend uses so a test can check them without a device. pyverbs ships no type information,
so its objects are `Any` here.
"""

from __future__ import annotations

import importlib
import importlib.util
import random
from typing import Any

from dualpath.errors import require
from dualpath.runtime.engines.memory import Memory
from dualpath.runtime.transports.transport_types import LocalRegion, TransportError
from dualpath.runtime.transports.verbs_wire import QPInfo, RegionInfo

PYVERBS_NAMES = (
    ("pyverbs.device", "get_device_list"), ("pyverbs.device", "Context"), ("pyverbs.pd", "PD"),
    ("pyverbs.mr", "MR"), ("pyverbs.cq", "CQ"), ("pyverbs.qp", "QP"), ("pyverbs.qp", "QPInitAttr"),
    ("pyverbs.qp", "QPCap"), ("pyverbs.qp", "QPAttr"), ("pyverbs.wr", "SendWR"), ("pyverbs.wr", "RecvWR"),
    ("pyverbs.wr", "SGE"), ("pyverbs.addr", "AHAttr"), ("pyverbs.addr", "GlobalRoute"),
    ("pyverbs.addr", "GID"),
    ("pyverbs.pyverbs_error", "PyverbsError"),
    ("pyverbs.libibverbs_enums", "IBV_QPT_RC"), ("pyverbs.libibverbs_enums", "IBV_ACCESS_LOCAL_WRITE"),
    ("pyverbs.libibverbs_enums", "IBV_ACCESS_REMOTE_WRITE"), ("pyverbs.libibverbs_enums", "IBV_WR_RDMA_WRITE"),
    ("pyverbs.libibverbs_enums", "IBV_WR_RDMA_WRITE_WITH_IMM"), ("pyverbs.libibverbs_enums", "IBV_SEND_SIGNALED"),
    ("pyverbs.libibverbs_enums", "IBV_WC_SUCCESS"), ("pyverbs.libibverbs_enums", "IBV_WC_RECV_RDMA_WITH_IMM"),
    ("pyverbs.libibverbs_enums", "IBV_PORT_ACTIVE"), ("pyverbs.libibverbs_enums", "IBV_LINK_LAYER_ETHERNET"),
)
ZERO_GID = "0000:0000:0000:0000:0000:0000:0000:0000"
MAX_WR = 1024
NUM_RECV = 512


def pyverbs_module(module: str) -> Any:
    """Import a pyverbs module, or raise `MissingExtraError` naming the "rdma" extra."""
    require("pyverbs", "rdma")
    return importlib.import_module(module)


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


class VerbsDevice:
    """One port of an RDMA device, opened: context, protection domain, the send and receive CQs every
    QP shares, and the small MR that posted receives point at (writes with an immediate land in the
    target region; the receive only carries the immediate).

    `device` defaults to the first RDMA device, `gid_index` to the first non-zero GID; `owner` (the
    transport's name) prefixes errors.
    """

    def __init__(self, owner: str, device: str | None, ib_port: int, gid_index: int | None, sl: int) -> None:
        d, e = pyverbs_module("pyverbs.device"), pyverbs_module("pyverbs.libibverbs_enums")
        self.owner = owner
        self.e = e  # pyverbs.libibverbs_enums
        names = rdma_devices()
        if not names:
            raise TransportError("no RDMA device found (get_device_list() is empty)")
        self.name = device or names[0]
        self.ctx = d.Context(name=self.name)
        self.ib_port, self.sl = ib_port, sl
        self.port_attr = self.ctx.query_port(ib_port)
        if self.port_attr.state != e.IBV_PORT_ACTIVE:
            raise TransportError(f"{self.name} port {ib_port} is not active")
        self.gid_index = gid_index if gid_index is not None else self._first_gid()
        self.gid = str(self.ctx.query_gid(ib_port, self.gid_index))
        self.pd = pyverbs_module("pyverbs.pd").PD(self.ctx)
        cq_cls = pyverbs_module("pyverbs.cq").CQ
        self.send_cq, self.recv_cq = cq_cls(self.ctx, 4 * MAX_WR), cq_cls(self.ctx, 4 * NUM_RECV)
        mr_cls = pyverbs_module("pyverbs.mr").MR
        self.recv_mr = mr_cls(self.pd, 64, e.IBV_ACCESS_LOCAL_WRITE)

    def _first_gid(self) -> int:
        for index in range(self.port_attr.gid_tbl_len):
            if str(self.ctx.query_gid(self.ib_port, index)) != ZERO_GID:
                return index
        return 0

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
    def create_qp(self) -> tuple[Any, QPInfo]:
        """A new RC QP on the shared CQs with every receive posted, and the `QPInfo` its peer needs."""
        qp_mod, e = pyverbs_module("pyverbs.qp"), self.e
        cap = qp_mod.QPCap(max_send_wr=MAX_WR, max_recv_wr=NUM_RECV, max_send_sge=1, max_recv_sge=1)
        init = qp_mod.QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.send_cq, rcq=self.recv_cq, cap=cap,
                                 sq_sig_all=0)
        attr = qp_mod.QPAttr(port_num=self.ib_port)
        attr.qp_access_flags = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE
        qp = qp_mod.QP(self.pd, init, attr)
        wr_mod = pyverbs_module("pyverbs.wr")
        for i in range(NUM_RECV):
            sge = wr_mod.SGE(self.recv_mr.buf, 64, self.recv_mr.lkey)
            qp.post_recv(wr_mod.RecvWR(wr_id=i, num_sge=1, sg=[sge]))
        return qp, QPInfo(qp.qp_num, self.port_attr.lid, self.gid, random.getrandbits(24),
                          self.port_attr.active_mtu)

    def to_rts(self, qp: Any, local: QPInfo, remote: QPInfo) -> None:
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
        qp.to_rts(attr)
