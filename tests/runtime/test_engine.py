"""Engines end to end: multi-turn conversations over storage on both read paths match a full recompute.

Most tests run a PE and a DE inside this process (threads, real TCP on loopback, real block files)
so they are fast; one test starts them as OS processes through the launcher, from a checkpoint.
"""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

from dualpath.protocol import ALL_STEP_NAMES
from dualpath.runtime.engine import ENGINE_STEP_NAMES, PRESETS
from dualpath.runtime.engines.checkpoint import save_checkpoint
from dualpath.runtime.engines.decoder import Decoder, DecoderConfig, random_weights
from dualpath.runtime.scheduling.client import turn_record
from dualpath.runtime.scheduling.launcher import launch_local
from dualpath.runtime.transports.control import ControlError, connect
from dualpath.runtime.transports.transport import TransportError, create_transport
from dualpath.trace import Trace
from tests.runtime.cases import engine_pair

SECRET = "correct horse battery staple 42"
WRONG = "wrong horse battery staple 4242"
BLOCK = 16
TOLERANCE = 1e-4  # max |logit difference| against the no-cache recompute, float32 on CPU
COARSE = ["admit", "read", "start_prefill", "handoff", "start_decode", "finish"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    common = {"store_dir": str(store), "block_tokens": BLOCK, "max_context_tokens": 512, "buffer_blocks": 96}
    with engine_pair(SECRET, **common) as pair:
        yield pair


def converse(client, pe, de, reference, seed, paths, chunk_tokens=None, first_tokens=37, append=13, new=6):
    """Run one conversation, turn t using paths[t]; check every turn against a full recompute."""
    gen = torch.Generator().manual_seed(seed)
    vocab = reference.config.vocab_size
    context = torch.randint(0, vocab, (first_tokens,), generator=gen).tolist()
    covered = 0  # tokens whose KV the previous turn computed (its prompt and all but its last token)
    results = []
    for path in paths:
        result = client.submit(pe, de, context, new, path=path, chunk_tokens=chunk_tokens, return_logits=True)
        expected, expected_logits = reference.generate(context, new)
        assert result.tokens == expected
        assert (result.logits - expected_logits).abs().max().item() <= TOLERANCE
        assert result.hit_tokens == min(covered // BLOCK, (len(context) - 1) // BLOCK) * BLOCK
        if path != "auto":
            assert result.path == path
        results.append(result)
        covered = len(context) + new - 1
        context = context + result.tokens + torch.randint(0, vocab, (append,), generator=gen).tolist()
    return results


@pytest.mark.parametrize("paths,chunk,seed", [
    (["pe", "pe", "pe", "pe"], None, 1),
    (["de", "de", "de", "de"], None, 2),
    (["pe", "de", "pe", "de"], 5, 3),
    (["de", "de", "pe"], 16, 4),
    (["auto", "auto", "auto"], None, 5),
])
def test_multi_turn_from_storage_matches_full_recompute(cluster, paths, chunk, seed):
    pe, _de, pe_address, de_address, client = cluster
    results = converse(client, pe_address, de_address, pe.decoder, seed, paths, chunk)
    assert all(r.hit_tokens > 0 for r in results[1:])
    assert {r.read_bytes for r in results[1:]} != {0}


def test_engines_take_exactly_the_protocol_steps(cluster):
    pe, _de, pe_address, de_address, client = cluster
    results = converse(client, pe_address, de_address, pe.decoder, 6, ["pe", "de"], chunk_tokens=7)
    assert set(ENGINE_STEP_NAMES) <= set(ALL_STEP_NAMES)
    num_layers = pe.decoder.config.num_layers
    for result in results:
        steps = client.trace(pe_address, result.request) + client.trace(de_address, result.request)
        steps.sort(key=lambda s: s["at"])
        assert {s["step"] for s in steps} <= set(ALL_STEP_NAMES)
        assert [s["step"] for s in steps if s["step"] in COARSE] == COARSE
        layer_steps = [s for s in steps if s["step"].startswith("layer_")]
        chunks = {s["chunk"] for s in layer_steps}
        assert len(layer_steps) == 3 * num_layers * len(chunks)
        for chunk in chunks:
            for layer in range(num_layers):
                names = [s["step"] for s in layer_steps if s["chunk"] == chunk and s["layer"] == layer]
                assert names == ["layer_load", "layer_send", "layer_done"]
        prefill_start = next(s["at"] for s in steps if s["step"] == "start_prefill")
        handoff = next(s["at"] for s in steps if s["step"] == "handoff")
        assert all(prefill_start <= s["at"] <= handoff for s in layer_steps)


def test_turns_become_a_runtime_trace(cluster):
    pe, _de, pe_address, de_address, client = cluster
    results = converse(client, pe_address, de_address, pe.decoder, 9, ["pe", "de"])
    origin = results[0].times["arrival"]
    trace = Trace("runtime", "fixed", [turn_record(r, 0, i, 50, origin) for i, r in enumerate(results)])
    metrics = Trace.from_json(trace.to_json()).metrics()
    assert metrics.num_requests == 2 and metrics.output_tokens == 12
    assert 0 < metrics.ttft_mean_s < metrics.jct_s
    assert trace.read_bytes_by_side() == (results[0].read_bytes, results[1].read_bytes)


def test_every_buffer_is_free_when_requests_are_done(cluster):
    pe, _de, pe_address, de_address, client = cluster
    converse(client, pe_address, de_address, pe.decoder, 7, ["pe", "de"])
    for address in (pe_address, de_address):
        assert set(client.stats(address)["used"].values()) == {0}


def test_a_bad_request_is_refused_with_its_field(cluster):
    _pe, _de, pe_address, de_address, client = cluster
    with pytest.raises(ControlError, match="tokens"):
        client.submit(pe_address, de_address, [1, 2, 999999], 2)
    with pytest.raises(ControlError, match="path"):
        client.submit(pe_address, de_address, [1, 2, 3], 2, path="sideways")
    with pytest.raises(ControlError, match="max_context_tokens"):
        client.submit(pe_address, de_address, [1] * 500, 20)
    with pytest.raises(ControlError, match="chunk_tokens"):
        client.submit(pe_address, de_address, [1, 2, 3], 2, chunk_tokens=0)
    assert set(client.stats(de_address)["used"].values()) == {0}  # refusals hold nothing


def test_peers_without_the_secret_are_refused_and_logged(cluster, caplog):
    pe, de, pe_address, _de_address, client = cluster
    refused_before = pe.control.num_refused
    with caplog.at_level(logging.WARNING, logger="dualpath.runtime.transports.auth"):
        with pytest.raises(ControlError, match=r"secret|refused"):
            connect(pe_address, WRONG, "intruder")
        with create_transport("tcp", "intruder", WRONG) as rogue, pytest.raises(TransportError):
            rogue.connect(de.data_address)
    assert pe.control.num_refused == refused_before + 1
    assert any("refused peer" in r.getMessage() and "intruder" in r.getMessage() for r in caplog.records)
    assert client.hello(pe_address)["role"] == "prefill"  # the right secret still works


def test_engine_processes_serve_a_conversation_from_a_checkpoint(tmp_path):
    config = DecoderConfig(**PRESETS["tiny"])
    weights = random_weights(config, seed=21)
    save_checkpoint(tmp_path / "ckpt", config, weights, model_type="qwen2" if config.attention_bias else "llama")
    reference = Decoder(config, weights)
    args = ["--checkpoint", str(tmp_path / "ckpt"), "--block-tokens", str(BLOCK), "--max-context-tokens", "512",
            "--buffer-blocks", "64"]
    with launch_local(1, 1, tmp_path / "store", tmp_path / "logs", SECRET, engine_args=args) as local:
        with local.client() as client:
            converse(client, local.prefill[0], local.decode[0], reference, 8, ["pe", "de", "auto"])
            with pytest.raises(ControlError):
                connect(local.prefill[0], WRONG, "intruder")
        pe_log = next(e.log_path for e in local.engines if e.role == "prefill")
    codes = {e.name: e.process.returncode for e in local.engines}
    assert set(codes.values()) == {0}, (codes, {e.name: e.log_path.read_text()[-1500:] for e in local.engines})
    assert "refused peer" in pe_log.read_text() and "intruder" in pe_log.read_text()
