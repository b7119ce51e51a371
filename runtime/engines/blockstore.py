"""Block store: a directory of Full-Block files (a 3FS FUSE mount or a local NVMe directory).

Layout: `<root>/<id[:2]>/<id>.blk`, where `id` is the block's prefix-chained hash
(`dualpath.kvlayout.chain_block_ids`). Each file is a header followed by the Full Block
(`dualpath.runtime.engines.block_file`: per-layer checksums, payload at a 4 KiB-aligned offset).

Reads go straight into a caller's buffer with `readinto` (no intermediate copy); writes are atomic
(temp file in the same directory, fsync, `os.replace`, fsync of the directory), so a killed writer
leaves either the old state or the whole new block. A corrupt or missing block raises
`BlockCorruptError` / `BlockMissingError` naming the id and path; its bytes are never returned as data.
The in-memory `PrefixTrie` (rebuilt from the headers at open) answers hit lookups.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from dualpath.errors import SpecError
from dualpath.kvlayout import KVLayout, PrefixTrie
from dualpath.runtime.engines.block_file import (
    ALIGN_BYTES,
    ID_FIELD_BYTES,
    MAGIC,
    VERSION,
    BlockCorruptError,
    BlockError,
    BlockMissingError,
    check_block_id,
    decode_header,
    encode_header,
    fsync_dir,
    header_bytes,
    read_exact,
    readinto_exact,
    write_all,
)
from dualpath.runtime.transports.ratelimit import NicLimiter

__all__ = [
    "ALIGN_BYTES", "ID_FIELD_BYTES", "MAGIC", "SUFFIX", "TEMP_SUFFIX", "VERSION", "BlockCorruptError",
    "BlockError", "BlockMissingError", "BlockStore", "check_block_id", "header_bytes",
]

SUFFIX = ".blk"
TEMP_SUFFIX = ".tmp"


class BlockStore:
    """Full Blocks of one `KVLayout` under `root`. Thread-safe; several processes may share `root`.

    `limiter` (an SNIC `NicLimiter`) paces reads, `write_limiter` paces writes (a NIC is full duplex).
    """

    def __init__(self, root: str | os.PathLike, layout: KVLayout, limiter: NicLimiter | None = None,
                 write_limiter: NicLimiter | None = None, scan: bool = True) -> None:
        self.root = Path(root)
        self.layout = layout
        self.limiter = limiter
        self.write_limiter = write_limiter
        self.trie = PrefixTrie()
        self._parent: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._header_bytes = header_bytes(layout.num_layers)
        self.root.mkdir(parents=True, exist_ok=True)
        if scan:
            self.rescan()

    # -- naming ------------------------------------------------------------------------------------
    def path_of(self, block_id: str) -> Path:
        check_block_id(block_id)
        return self.root / block_id[:2] / f"{block_id}{SUFFIX}"

    def __contains__(self, block_id: str) -> bool:
        return self.path_of(block_id).exists()

    def ids(self) -> Iterator[str]:
        """Ids of the block files present (no verification)."""
        for path in self.root.glob(f"*/*{SUFFIX}"):
            yield path.name[: -len(SUFFIX)]

    # -- hit lookup ----------------------------------------------------------------------------------
    def match(self, block_ids: Sequence[str]) -> int:
        """How many leading blocks of a prompt's chained ids are stored."""
        with self._lock:
            return self.trie.match(block_ids)

    def rescan(self) -> int:
        """Rebuild the trie from the headers on disk; returns blocks indexed. Unreadable files are
        skipped (a read of them reports the problem); blocks whose parent is absent are unreachable."""
        parents: dict[str, str | None] = {}
        for block_id in self.ids():
            try:
                parents[block_id] = self._read_header(block_id, self.path_of(block_id))[1]
            except BlockError:
                continue
        with self._lock:
            self.trie = PrefixTrie()
            self._parent = parents
            leaves = set(parents) - {p for p in parents.values() if p is not None}
            for leaf in sorted(leaves):
                chain = self._chain(leaf)
                if chain is not None:
                    self.trie.insert(chain)
            return len(self.trie)

    def _chain(self, block_id: str) -> list[str] | None:
        """Ids from the root to `block_id` along recorded parents; None if a link is missing."""
        chain = [block_id]
        seen = {block_id}
        parent = self._parent.get(block_id)
        while parent is not None:
            if parent not in self._parent or parent in seen:
                return None
            chain.append(parent)
            seen.add(parent)
            parent = self._parent[parent]
        chain.reverse()
        return chain

    # -- writing -------------------------------------------------------------------------------------
    def write(self, block_id: str, payload, parent_id: str | None = None) -> Path:
        """Persist one Full Block atomically; `parent_id` is the previous block of the prompt."""
        path = self.path_of(block_id)
        if parent_id is not None:
            check_block_id(parent_id)
        data = memoryview(payload).cast("B")
        if data.nbytes != self.layout.full_block_bytes:
            raise SpecError("BlockStore.write", "payload bytes", data.nbytes,
                            f"{self.layout.full_block_bytes} (one Full Block)")
        if self.write_limiter is not None:
            self.write_limiter.acquire(data.nbytes)
        header = encode_header(self.layout, block_id, parent_id, data)
        path.parent.mkdir(exist_ok=True)
        temp = path.parent / f".{block_id}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # KV is as private as the prompts
        try:
            write_all(fd, header)
            write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(temp, path)
        fsync_dir(path.parent)
        with self._lock:
            self._parent[block_id] = parent_id
            chain = self._chain(block_id)
            if chain is not None:
                self.trie.insert(chain)
        return path

    def delete(self, block_id: str) -> bool:
        """Remove a block file (the trie keeps the id until the next `rescan`)."""
        try:
            self.path_of(block_id).unlink()
            return True
        except FileNotFoundError:
            return False

    def remove_temp_files(self, older_than_s: float = 60.0) -> int:
        """Delete leftovers of killed writers older than `older_than_s`; returns how many."""
        cutoff = time.time() - older_than_s
        removed = 0
        for temp in self.root.glob(f"*/.*{TEMP_SUFFIX}"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # -- reading -------------------------------------------------------------------------------------
    def read_into(self, block_id: str, out) -> int:
        """Read and verify a whole Full Block into `out` (a writable buffer of at least one Full Block)."""
        return self._read(block_id, out, 0, self.layout.num_layers)

    def read_layer_into(self, block_id: str, layer: int, out) -> int:
        """Read and verify one Layer Block (offset `layer * layer_block_bytes`) into `out`."""
        self.layout.layer_offset_bytes(layer)
        return self._read(block_id, out, layer, 1)

    def read(self, block_id: str) -> bytearray:
        """Convenience: a new buffer holding the verified Full Block."""
        out = bytearray(self.layout.full_block_bytes)
        self.read_into(block_id, out)
        return out

    def verify(self, block_id: str) -> None:
        """Raise `BlockError` unless the block reads back intact."""
        self.read(block_id)

    def _read(self, block_id: str, out, first_layer: int, num_layers: int) -> int:
        path = self.path_of(block_id)
        layer_bytes = self.layout.layer_block_bytes
        nbytes = layer_bytes * num_layers
        view = memoryview(out).cast("B")
        if view.readonly or view.nbytes < nbytes:
            raise SpecError("BlockStore.read", "out", f"{view.nbytes} bytes",
                            f"a writable buffer of >= {nbytes}")
        view = view[:nbytes]
        if self.limiter is not None:
            self.limiter.acquire(nbytes)
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                expected = self._header_bytes + self.layout.full_block_bytes
                if size != expected:
                    raise BlockCorruptError(block_id, path, f"file is {size} bytes, expected {expected}")
                head = read_exact(f, self._header_bytes, path, block_id)
                crcs, _ = decode_header(self.layout, block_id, path, head)
                f.seek(self._header_bytes + first_layer * layer_bytes)
                got = readinto_exact(f, view)
                if got < nbytes:
                    raise BlockCorruptError(block_id, path, f"truncated: {got} of {nbytes} payload bytes")
        except FileNotFoundError:
            raise BlockMissingError(block_id, path, "no such block file") from None
        for i in range(num_layers):
            layer = first_layer + i
            if zlib.crc32(view[i * layer_bytes : (i + 1) * layer_bytes]) != crcs[layer]:
                raise BlockCorruptError(block_id, path, f"checksum mismatch in layer {layer}")
        return nbytes

    def _read_header(self, block_id: str, path: Path) -> tuple[tuple[int, ...], str | None]:
        try:
            with open(path, "rb", buffering=0) as f:
                head = read_exact(f, self._header_bytes, path, block_id)
                return decode_header(self.layout, block_id, path, head)
        except FileNotFoundError:
            raise BlockMissingError(block_id, path, "no such block file") from None

