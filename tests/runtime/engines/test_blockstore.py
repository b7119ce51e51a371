"""Block store: round trips, layer slices, hit lookup, and corruption never returned as data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dualpath.errors import SpecError
from dualpath.kvlayout import KVLayout, chain_block_ids
from dualpath.runtime.engines.blockstore import (
    BlockCorruptError,
    BlockMissingError,
    BlockStore,
    header_bytes,
)
from dualpath.runtime.transports.ratelimit import snic_limiter

LAYOUT = KVLayout(num_layers=4, kv_bytes_per_token_per_layer=16, block_tokens=8)  # 128 B layers, 512 B blocks


def _payload(seed: int, layout: KVLayout = LAYOUT) -> bytes:
    return bytes((seed * 31 + i * 7) % 256 for i in range(layout.full_block_bytes))


def _prompt_ids(n_blocks: int, first_token: int = 0) -> list[str]:
    tokens = list(range(first_token, first_token + n_blocks * LAYOUT.block_tokens))
    return chain_block_ids(tokens, LAYOUT.block_tokens)


@pytest.fixture
def store(tmp_path):
    return BlockStore(tmp_path / "kv", LAYOUT)


def _write_prompt(store: BlockStore, ids: list[str]) -> None:
    parent = None
    for i, block_id in enumerate(ids):
        store.write(block_id, _payload(i), parent)
        parent = block_id


def test_full_block_round_trip_into_a_slice_of_a_larger_buffer(store):
    (block_id,) = _prompt_ids(1)
    store.write(block_id, _payload(3))
    region = bytearray(3 * LAYOUT.full_block_bytes)
    view = memoryview(region)[LAYOUT.full_block_bytes : 2 * LAYOUT.full_block_bytes]
    assert store.read_into(block_id, view) == LAYOUT.full_block_bytes
    assert bytes(view) == _payload(3)
    assert region[: LAYOUT.full_block_bytes] == bytes(LAYOUT.full_block_bytes)  # nothing spilled


def test_layer_slices_match_the_full_block(store):
    (block_id,) = _prompt_ids(1)
    data = _payload(5)
    store.write(block_id, data)
    out = bytearray(LAYOUT.layer_block_bytes)
    for layer in range(LAYOUT.num_layers):
        store.read_layer_into(block_id, layer, out)
        start = LAYOUT.layer_offset_bytes(layer)
        assert bytes(out) == data[start : start + LAYOUT.layer_block_bytes]
    with pytest.raises(SpecError, match="layer"):
        store.read_layer_into(block_id, LAYOUT.num_layers, out)


def test_file_layout_and_alignment(store):
    (block_id,) = _prompt_ids(1)
    path = store.write(block_id, _payload(0))
    assert path == store.root / block_id[:2] / f"{block_id}.blk"
    assert path.stat().st_size == header_bytes(LAYOUT.num_layers) + LAYOUT.full_block_bytes
    assert header_bytes(LAYOUT.num_layers) % 4096 == 0
    assert list(store.ids()) == [block_id]
    assert path.stat().st_mode & 0o777 == 0o600  # KV is as private as the prompts it encodes


@pytest.mark.parametrize("bad", ["deadbeef\n", "deadbeef\r", " deadbeef", "DEADBEEF", "deadbee", "d" * 65])
def test_block_ids_match_exactly(store, bad):
    assert store.path_of("deadbeef").name == "deadbeef.blk"
    with pytest.raises(SpecError, match="block_id"):
        store.path_of(bad)


def test_trie_answers_hits_and_survives_reopen(store, tmp_path):
    ids = _prompt_ids(5)
    _write_prompt(store, ids[:3])
    assert store.match(ids) == 3
    other = _prompt_ids(5, first_token=1000)
    assert store.match(other) == 0
    reopened = BlockStore(tmp_path / "kv", LAYOUT)
    assert reopened.match(ids) == 3
    assert len(reopened.trie) == 3


def test_orphans_are_not_hits(store, tmp_path):
    ids = _prompt_ids(3)
    _write_prompt(store, ids)
    store.delete(ids[0])
    reopened = BlockStore(tmp_path / "kv", LAYOUT)
    assert reopened.match(ids) == 0  # blocks 1 and 2 lost their parent


def test_missing_block_is_reported(store):
    (block_id,) = _prompt_ids(1)
    with pytest.raises(BlockMissingError, match=block_id) as info:
        store.read(block_id)
    assert info.value.path.endswith(f"{block_id}.blk")


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_flipped_payload_byte_is_detected_in_its_layer_only(store):
    (block_id,) = _prompt_ids(1)
    path = store.write(block_id, _payload(1))
    layer = 2
    _flip(path, header_bytes(LAYOUT.num_layers) + LAYOUT.layer_offset_bytes(layer) + 17)
    with pytest.raises(BlockCorruptError, match=f"checksum mismatch in layer {layer}") as info:
        store.read(block_id)
    assert info.value.block_id == block_id and str(path) in str(info.value)
    out = bytearray(LAYOUT.layer_block_bytes)
    store.read_layer_into(block_id, 1, out)  # an intact layer still reads
    with pytest.raises(BlockCorruptError):
        store.read_layer_into(block_id, layer, out)


@pytest.mark.parametrize("offset, reason", [(0, "bad magic"), (40, "header checksum"), (8, "geometry")])
def test_flipped_header_byte_is_detected(store, offset, reason):
    (block_id,) = _prompt_ids(1)
    path = store.write(block_id, _payload(1))
    _flip(path, offset)
    with pytest.raises(BlockCorruptError, match=reason):
        store.read(block_id)


def test_truncated_and_misnamed_files_are_corrupt(store):
    a, b = _prompt_ids(2)
    path = store.write(a, _payload(1))
    os.truncate(path, path.stat().st_size - 1)
    with pytest.raises(BlockCorruptError, match="expected"):
        store.read(a)
    store.write(a, _payload(1))
    other = store.path_of(b)
    other.parent.mkdir(exist_ok=True)
    os.replace(store.path_of(a), other)
    with pytest.raises(BlockCorruptError, match="holds block"):
        store.read(b)


def test_layout_mismatch_is_corrupt(store, tmp_path):
    (block_id,) = _prompt_ids(1)
    store.write(block_id, _payload(1))
    other = BlockStore(tmp_path / "kv", KVLayout(num_layers=2, kv_bytes_per_token_per_layer=32, block_tokens=8))
    with pytest.raises(BlockCorruptError, match="geometry"):
        other.read(block_id)


def test_bad_arguments(store):
    with pytest.raises(SpecError, match="block_id"):
        store.path_of("../../etc/passwd")
    with pytest.raises(SpecError, match="payload bytes"):
        store.write(_prompt_ids(1)[0], b"short")
    with pytest.raises(SpecError, match="writable buffer"):
        store.read_into(_prompt_ids(1)[0], bytearray(3))


def test_reads_and_writes_go_through_the_limiters(tmp_path):
    reads, writes = snic_limiter("n0", None), snic_limiter("n0-tx", None)
    store = BlockStore(tmp_path / "kv", LAYOUT, limiter=reads, write_limiter=writes)
    (block_id,) = _prompt_ids(1)
    store.write(block_id, _payload(0))
    store.read(block_id)
    store.read_layer_into(block_id, 0, bytearray(LAYOUT.layer_block_bytes))
    assert writes.stats["storage"].granted_bytes == LAYOUT.full_block_bytes
    assert reads.stats["storage"].granted_bytes == LAYOUT.full_block_bytes + LAYOUT.layer_block_bytes


WRITER = textwrap.dedent(
    """
    import sys
    from dualpath.kvlayout import KVLayout
    from dualpath.runtime.engines.blockstore import BlockStore
    layout = KVLayout(num_layers=8, kv_bytes_per_token_per_layer=16384, block_tokens=64)  # 8 MiB blocks
    store = BlockStore(sys.argv[1], layout, scan=False)
    payload = bytearray(layout.full_block_bytes)
    for i in range(10_000):
        payload[:8] = i.to_bytes(8, "little")
        payload[-8:] = i.to_bytes(8, "little")
        store.write(f"{i % 4:016x}", payload)
        print(i, flush=True)
    """
)


def _kill_writer_mid_write(root: Path) -> int:
    """Start a writer, SIGKILL it while a temp file exists; returns how many torn temp files remain."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "0"  # the first block is complete
        deadline = time.monotonic() + 20
        while not list(root.glob("*/.*.tmp")):  # a write is in flight: kill it there
            assert time.monotonic() < deadline, "writer never showed a temp file"
            time.sleep(0.0005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return len(list(root.glob("*/.*.tmp")))


def test_killed_writer_leaves_no_torn_block(tmp_path):
    layout = KVLayout(num_layers=8, kv_bytes_per_token_per_layer=16384, block_tokens=64)
    torn = 0
    for attempt in range(3):  # the kill lands mid-write nearly always; retry the rare miss
        root = tmp_path / f"kv{attempt}"
        torn = _kill_writer_mid_write(root)
        store = BlockStore(root, layout)
        ids = list(store.ids())
        assert ids, "the completed block must be there"
        for block_id in ids:
            data = store.read(block_id)  # verifies every layer
            assert data[:8] == data[-8:]
        assert store.remove_temp_files(older_than_s=0) == torn
        assert not list(root.glob("*/.*.tmp"))
        if torn:
            break
    assert torn == 1, "no kill landed mid-write in 3 attempts"
