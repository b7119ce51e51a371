"""Block file format: the header before each Full Block's payload, its checksums, and exact file I/O.

    magic "DPBLK1", version, num_layers, layer_block_bytes, block id, parent id,
    crc32 of each Layer Block, crc32 of the header;  payload at a 4 KiB-aligned offset.

Per-layer checksums let a single Layer Block be read and verified without touching the rest.
`BlockStore` (`dualpath.runtime.engines.blockstore`) names the files and does the atomic writes.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

from dualpath.errors import DualpathError, SpecError
from dualpath.kvlayout import KVLayout

MAGIC = b"DPBLK1"
VERSION = 1
ID_FIELD_BYTES = 64
_FIXED = struct.Struct(f"<6sHIQ{ID_FIELD_BYTES}s{ID_FIELD_BYTES}s")
ALIGN_BYTES = 4096
_ID_RE = re.compile(rf"[0-9a-f]{{8,{ID_FIELD_BYTES}}}")


class BlockError(DualpathError):
    """A block cannot be served; names the block id and the file."""

    def __init__(self, block_id: str, path: Path | str, reason: str):
        self.block_id = block_id
        self.path = str(path)
        self.reason = reason
        super().__init__(f"block {block_id} ({path}): {reason}")


class BlockMissingError(BlockError):
    """No file for the block."""


class BlockCorruptError(BlockError):
    """The file exists but fails a check (magic, version, geometry, length, header or layer checksum)."""


def check_block_id(block_id: str) -> str:
    # fullmatch: `$` would also match before a trailing newline, and the id names a file.
    if not isinstance(block_id, str) or not _ID_RE.fullmatch(block_id):
        raise SpecError("BlockStore", "block_id", block_id, f"8..{ID_FIELD_BYTES} lowercase hex digits")
    return block_id


def header_bytes(num_layers: int) -> int:
    """Bytes before the payload: fixed header, layer checksums, header checksum, padded to 4 KiB."""
    raw = _FIXED.size + 4 * num_layers + 4
    return -(-raw // ALIGN_BYTES) * ALIGN_BYTES


def encode_header(layout: KVLayout, block_id: str, parent_id: str | None, data: memoryview) -> bytes:
    """The padded header of a block whose payload is `data` (one Full Block of `layout`)."""
    layer_bytes = layout.layer_block_bytes
    fixed = _FIXED.pack(MAGIC, VERSION, layout.num_layers, layer_bytes,
                        block_id.encode(), (parent_id or "").encode())
    crcs = struct.pack(f"<{layout.num_layers}I", *(
        zlib.crc32(data[i * layer_bytes : (i + 1) * layer_bytes]) for i in range(layout.num_layers)))
    head = fixed + crcs
    head += struct.pack("<I", zlib.crc32(head))
    return head + bytes(header_bytes(layout.num_layers) - len(head))


def decode_header(layout: KVLayout, block_id: str, path: Path,
                  head: bytes) -> tuple[tuple[int, ...], str | None]:
    """(per-layer crc32s, parent id) of a header; `BlockCorruptError` unless it fits the layout and id."""
    magic, version, num_layers, layer_bytes, stored_id, parent = _FIXED.unpack_from(head)
    if magic != MAGIC:
        raise BlockCorruptError(block_id, path, f"bad magic {magic!r}")
    if version != VERSION:
        raise BlockCorruptError(block_id, path, f"unsupported version {version}")
    if num_layers != layout.num_layers or layer_bytes != layout.layer_block_bytes:
        raise BlockCorruptError(block_id, path, f"geometry {num_layers} layers x {layer_bytes} B does not "
                                f"match the layout ({layout.num_layers} x {layout.layer_block_bytes} B)")
    end = _FIXED.size + 4 * num_layers
    (head_crc,) = struct.unpack_from("<I", head, end)
    if zlib.crc32(head[:end]) != head_crc:
        raise BlockCorruptError(block_id, path, "header checksum mismatch")
    stored = stored_id.rstrip(b"\0").decode(errors="replace")
    if stored != block_id:
        raise BlockCorruptError(block_id, path, f"file holds block {stored!r}")
    crcs = struct.unpack_from(f"<{num_layers}I", head, _FIXED.size)
    parent_id = parent.rstrip(b"\0").decode(errors="replace") or None
    return crcs, parent_id


def write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view.nbytes:
        view = view[os.write(fd, view) :]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def readinto_exact(f, view: memoryview) -> int:
    got = 0
    while got < view.nbytes:
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def read_exact(f, nbytes: int, path: Path, block_id: str) -> bytes:
    buf = bytearray(nbytes)
    got = readinto_exact(f, memoryview(buf))
    if got < nbytes:
        raise BlockCorruptError(block_id, path, f"truncated header: {got} of {nbytes} bytes")
    return bytes(buf)
