"""Batched engines: a prefill forward over several requests and a decode step over several sequences
give each one the numbers of a full recompute; sequences join and leave at step boundaries."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")

from dualpath.runtime.engine import EngineOptions, create_engine
from dualpath.runtime.engines.decode_batcher import Sequence
from dualpath.runtime.engines.decoder import Decoder, DecoderConfig
from dualpath.runtime.engines.layerwise import ChunkWork, prefill_batch
from tests.runtime.cases import engine_pair
from tests.runtime.engines.test_layerwise import MemoryLoader, MemorySink

CONFIG = DecoderConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=3, num_heads=4,
                       num_kv_heads=2, head_dim=16)
TOLERANCE = 1e-4  # max |logit difference| against the no-cache recompute (float32)
SECRET = "correct horse battery staple 42"
BLOCK = 16


class Counting(Decoder):
    """The decoder, noting how many sequences each layer pass ran together."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passes: list[int] = []

    def layer_batch(self, index, hidden, positions, segments):
        self.passes.append(len(segments))
        return super().layer_batch(index, hidden, positions, segments)


@pytest.fixture(scope="module")
def decoder():
    return Counting.from_seed(CONFIG, seed=11)


def tokens_of(n: int, seed: int) -> list[int]:
    return torch.randint(0, CONFIG.vocab_size, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def work_for(decoder, tokens, hit, start, end, chunk=0, earlier=None, sink=None):
    """The chunk [start, end) of the new tokens after a `hit` whose KV comes from a full forward."""
    _, full_kv = decoder.forward(tokens)
    earlier = earlier or ([[] for _ in range(CONFIG.num_layers)], [[] for _ in range(CONFIG.num_layers)])
    loader = MemoryLoader([(k[:hit], v[:hit]) for k, v in full_kv], num_slots=2)
    return ChunkWork(tokens[hit + start:hit + end], hit + start, hit, chunk, loader, sink or MemorySink(),
                     earlier[0], earlier[1], keep=hit + end < len(tokens))


def test_one_forward_over_ragged_requests_matches_each_full_forward(decoder):
    long, short, chunked = tokens_of(49, 1), tokens_of(5, 2), tokens_of(36, 3)
    first = work_for(decoder, chunked, 16, 0, 8)  # chunked's first chunk runs alone
    prefill_batch(decoder, [first])
    second = work_for(decoder, chunked, 16, 8, 20, chunk=1, earlier=(first.earlier_k, first.earlier_v))
    works = [work_for(decoder, long, 32, 0, 17), work_for(decoder, short, 0, 0, 5), second]
    decoder.passes.clear()
    prefill_batch(decoder, works)
    assert decoder.passes == [3] * CONFIG.num_layers  # each layer ran once, for the three requests together
    for work, tokens in zip(works, (long, short, chunked)):
        assert work.error is None
        full_logits, full_kv = decoder.forward(tokens)
        assert (work.logits - full_logits[-1]).abs().max().item() <= TOLERANCE
        assert int(work.logits.argmax()) == int(full_logits[-1].argmax())
        for layer in range(CONFIG.num_layers):
            (first_token, k, v), = work.sink.sent[layer]
            assert first_token == work.first_token
            end = work.first_token + len(work.tokens)
            assert torch.allclose(k, full_kv[layer][0][work.first_token:end], atol=TOLERANCE)
            assert torch.allclose(v, full_kv[layer][1][work.first_token:end], atol=TOLERANCE)
        assert work.loader.outstanding == 0


def test_a_request_whose_send_fails_leaves_the_batch_and_the_others_finish(decoder):
    broken = work_for(decoder, tokens_of(30, 4), 16, 0, 14, sink=MemorySink(fail_at=1))
    fine = work_for(decoder, tokens_of(21, 5), 16, 0, 5)
    decoder.passes.clear()
    prefill_batch(decoder, [broken, fine])
    assert isinstance(broken.error, RuntimeError) and broken.logits is None
    assert fine.error is None
    assert int(fine.logits.argmax()) == int(decoder.forward(tokens_of(21, 5))[0][-1].argmax())
    assert decoder.passes[0] == 2 and decoder.passes[-1] == 1  # the broken one dropped out after layer 1
    assert broken.loader.outstanding == 0 and fine.loader.outstanding == 0


def sequence_for(decoder, prompt, max_new, name, blocks, on_block=None):
    """A sequence handed off after prefill: the prompt's KV from a full forward, its first token."""
    cfg = decoder.config
    logits, full_kv = decoder.forward(prompt)
    kv = torch.zeros((cfg.num_layers, 2, len(prompt) + max_new, cfg.num_kv_heads, cfg.head_dim))
    for layer, (k, v) in enumerate(full_kv):
        kv[layer, 0, :len(prompt)], kv[layer, 1, :len(prompt)] = k, v

    def done(block):
        blocks.append((name, block))
        if on_block is not None:
            on_block(block)

    return Sequence(name, kv, [*prompt, int(logits[-1].argmax())], len(prompt), max_new, done, keep_logits=True)


def test_decode_steps_batch_every_running_sequence_and_they_join_and_leave_at_step_boundaries(tmp_path):
    de = create_engine(EngineOptions(role="decode", name="de-batch", store_dir=str(tmp_path), block_tokens=BLOCK,
                                     max_context_tokens=256, buffer_blocks=8), SECRET)
    try:
        decoder, blocks = de.decoder, []
        late = sequence_for(decoder, tokens_of(10, 9), 5, "d", blocks)
        joined: list = []
        prompts = {"a": (tokens_of(20, 6), 3), "b": (tokens_of(33, 7), 7), "c": (tokens_of(47, 8), 12)}
        seqs = [sequence_for(decoder, p, n, name, blocks,
                             on_block=(lambda block: joined.extend(de.batcher.join([late]))) if name == "c" else None)
                for name, (p, n) in prompts.items()]
        for future in de.batcher.join(seqs):
            future.result(timeout=60)
        joined[0].result(timeout=60)
        # c completes block 2 at step 1 (position 47), so d joins at step 2; a leaves after step 2,
        # d after step 5, b after step 6, c after step 11.
        assert de.stats()["decode_batches"]["recent"] == [3, 4, 3, 3, 3, 2, 1, 1, 1, 1, 1]
        assert blocks == [("c", 2)]  # the one Full Block decoding completed, at once
        for seq, (prompt, max_new) in zip([*seqs, late], [*prompts.values(), (tokens_of(10, 9), 5)]):
            expected, expected_logits = decoder.generate(prompt, max_new)
            assert seq.context[len(prompt):] == expected
            assert (torch.stack(seq.rows) - expected_logits[1:]).abs().max().item() <= TOLERANCE
    finally:
        de.close()


@pytest.fixture
def engines(tmp_path):
    common = {"store_dir": str(tmp_path), "block_tokens": BLOCK, "max_context_tokens": 512, "buffer_blocks": 160}
    with engine_pair(SECRET, {"num_slots": 8}, **common) as pair:
        yield pair


# Per conversation: read path and chunk size of its turns (split reads one hit block through the PE).
CONVERSATIONS = [("pe", None), ("de", None), ("split", None), ("pe", 7), ("de", 5), ("split", 11)]


def test_concurrent_conversations_on_every_path_match_a_recompute(engines):
    pe, _de, pe_address, de_address, client = engines
    reference, new = pe.decoder, 6
    errors: list[BaseException] = []
    chunks = [0]
    lock = threading.Lock()

    def converse(index, path, chunk_tokens):
        try:
            context = tokens_of(37 + 5 * index, 20 + index)
            for turn in range(2):
                result = client.submit(pe_address, de_address, context, new, path=path, chunk_tokens=chunk_tokens,
                                       pe_blocks=1 if path == "split" else None, return_logits=True)
                expected, expected_logits = reference.generate(context, new)
                assert result.tokens == expected, (index, turn)
                assert (result.logits - expected_logits).abs().max().item() <= TOLERANCE
                assert turn == 0 or (result.hit_tokens > 0 and result.path == path)
                with lock:
                    num_new = len(context) - result.hit_tokens
                    chunks[0] += -(-num_new // chunk_tokens) if chunk_tokens else 1
                context = context + result.tokens + tokens_of(9, 40 + index + turn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=converse, args=(i, *c)) for i, c in enumerate(CONVERSATIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[0]
    prefill, decode = client.stats(pe_address)["prefill_batches"], client.stats(de_address)["decode_batches"]
    assert prefill["items"] == chunks[0]  # each chunk of each turn ran in exactly one forward
    assert decode["items"] == 2 * len(CONVERSATIONS) * (new - 1)  # the first token comes from the prefill
    assert set(client.stats(pe_address)["used"].values()) == {0}
    assert set(client.stats(de_address)["used"].values()) == {0}
