"""Why a CUDA test cannot run here, told truthfully: `make test` installs torch's CPU-only build, so on a
machine with a GPU the reason is the build, not the device (`make test-gpu` installs a CUDA build)."""

from __future__ import annotations

import pytest


def cuda_skip_reason() -> str | None:
    """None when torch sees a CUDA device; otherwise which of torch, its build or the device is missing."""
    try:
        import torch
    except ImportError:
        return "needs torch with CUDA (torch is not installed)"
    if torch.version.cuda is None:
        return (f"needs a CUDA build of torch: {torch.__version__} is CPU-only (make test installs it; "
                "make test-gpu installs a CUDA build)")
    if not torch.cuda.is_available():
        return f"needs a CUDA device: torch {torch.__version__} (CUDA {torch.version.cuda}) sees none"
    return None


CUDA_SKIP = cuda_skip_reason()
needs_cuda = pytest.mark.skipif(CUDA_SKIP is not None, reason=str(CUDA_SKIP))
