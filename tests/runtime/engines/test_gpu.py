"""The engines' correctness test on CUDA: HBM layer slots on the device, pinned host DRAM buffers.

Same conversation check as tests/runtime/test_engine.py (tokens identical to a full recompute, logits within
1e-4 in float32), on both read paths and with chunked prefill. Skipped without a CUDA device.
"""

from __future__ import annotations

import pytest

from tests.cuda import needs_cuda

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, needs_cuda]

from dualpath.protocol import Resource
from tests.runtime.cases import engine_pair

SECRET = "correct horse battery staple 42"
BLOCK = 16
TOLERANCE = 1e-4  # float32 on the device; TF32 matmuls are off by default in torch


@pytest.fixture(scope="module")
def cuda_cluster(tmp_path_factory):
    torch.backends.cuda.matmul.allow_tf32 = False
    store = tmp_path_factory.mktemp("store")
    common = {"store_dir": str(store), "block_tokens": BLOCK, "max_context_tokens": 512, "buffer_blocks": 96,
              "device": "cuda", "cnic_centric": True}
    with engine_pair(SECRET, **common) as pair:
        yield pair


def test_memory_is_where_the_paper_puts_it(cuda_cluster):
    pe, de, *_ = cuda_cluster
    assert pe.pool.entry(Resource.PE_HBM_SLOT, pe.name).memory.on_device
    assert pe.pool.entry(Resource.PE_BUFFER, pe.node).memory.pinned
    assert de.pool.entry(Resource.DE_BUFFER, de.node).memory.pinned
    assert pe.decoder.device.type == "cuda" and de.decoder.device.type == "cuda"


@pytest.mark.parametrize("paths,chunk,seed", [
    (["pe", "pe", "pe"], None, 1),
    (["de", "de", "de"], None, 2),
    (["pe", "de", "auto"], 5, 3),
])
def test_multi_turn_on_cuda_matches_full_recompute(cuda_cluster, paths, chunk, seed):
    pe, _de, pe_address, de_address, client = cuda_cluster
    reference = pe.decoder
    gen = torch.Generator().manual_seed(seed)
    vocab = reference.config.vocab_size
    context = torch.randint(0, vocab, (37,), generator=gen).tolist()
    covered = 0
    for path in paths:
        result = client.submit(pe_address, de_address, context, 6, path=path, chunk_tokens=chunk,
                               return_logits=True)
        expected, expected_logits = reference.generate(context, 6)
        assert result.tokens == expected
        assert (result.logits - expected_logits.cpu()).abs().max().item() <= TOLERANCE
        assert result.hit_tokens == min(covered // BLOCK, (len(context) - 1) // BLOCK) * BLOCK
        covered = len(context) + 6 - 1
        context = context + result.tokens + torch.randint(0, vocab, (13,), generator=gen).tolist()
    for address in (pe_address, de_address):
        assert set(client.stats(address)["used"].values()) == {0}
