"""Memory: one contiguous area a transport can register, as host bytes and/or a torch tensor.

Host memory is a `bytearray` on CPU and a pinned torch tensor when a CUDA device is named; device
memory (HBM) is a CUDA tensor. torch is imported only in those cases.
"""

from __future__ import annotations

from dualpath.errors import SpecError, require


class Memory:
    """A contiguous registered-able memory area: host bytes (`view`) and/or a torch tensor (`tensor`).

    `device` is "cpu" (plain or pinned host memory) or "cuda:N" (HBM, `view` is None). `ptr` is the
    address (for RDMA registration). Build with `Memory.allocate` or `Memory.wrap`.
    """

    def __init__(self, nbytes: int, device: str, view: memoryview | None, tensor=None, pinned: bool = False):
        self.nbytes = nbytes
        self.device = device
        self.view = view
        self._tensor = tensor
        self.pinned = pinned

    @classmethod
    def allocate(cls, nbytes: int, device: str = "cpu", host: bool = True) -> Memory:
        """Allocate `nbytes`. `host=True` gives host memory, pinned when `device` is CUDA;
        `host=False` with a CUDA device gives device memory."""
        if nbytes <= 0:
            raise SpecError("Memory", "nbytes", nbytes, "a positive integer")
        if not device.startswith("cuda"):
            return cls(nbytes, "cpu", memoryview(bytearray(nbytes)))
        torch = require("torch", "runtime")
        if host:
            tensor = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
            return cls(nbytes, "cpu", memoryview(tensor.numpy()).cast("B"), tensor, pinned=True)
        tensor = torch.empty(nbytes, dtype=torch.uint8, device=device)
        return cls(nbytes, str(tensor.device), None, tensor)

    @classmethod
    def wrap(cls, obj) -> Memory:
        """Wrap an existing buffer: `Memory`, bytearray/memoryview/numpy array, or a torch tensor."""
        if isinstance(obj, Memory):
            return obj
        if type(obj).__module__.startswith("torch"):
            torch = require("torch", "runtime")
            if not obj.is_contiguous():
                raise SpecError("Memory.wrap", "tensor", tuple(obj.shape), "a contiguous tensor")
            flat = obj.reshape(-1).view(torch.uint8)
            if obj.device.type == "cpu":
                view = memoryview(flat.numpy())
                return cls(flat.numel(), "cpu", view, flat, pinned=bool(obj.is_pinned()))
            return cls(flat.numel(), str(obj.device), None, flat)
        view = memoryview(obj)
        if view.readonly:
            raise SpecError("Memory.wrap", "buffer", type(obj).__name__, "a writable buffer")
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        return cls(view.nbytes, "cpu", view)

    @property
    def tensor(self):
        """A torch uint8 tensor over the same memory (created lazily for host memory)."""
        if self._tensor is None:
            torch = require("torch", "runtime")
            self._tensor = torch.frombuffer(self.view, dtype=torch.uint8)
        return self._tensor

    @property
    def host_view(self) -> memoryview:
        """`view` of memory that is on the host (device memory has none)."""
        if self.view is None:
            raise SpecError("Memory", "device", self.device, "host memory (device memory has no host view)")
        return self.view

    @property
    def ptr(self) -> int:
        if self._tensor is not None:
            return int(self._tensor.data_ptr())
        import ctypes

        return ctypes.addressof(ctypes.c_char.from_buffer(self.host_view))

    @property
    def on_device(self) -> bool:
        return self.view is None
