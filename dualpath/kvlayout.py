"""KV layout: Full Blocks and Layer Blocks, and the prefix trie that answers cache-hit questions.

Storage holds Full Blocks (all layers of `block_tokens` tokens). A Layer Block is one layer of a Full
Block; a Full Block is its Layer Blocks concatenated, so per-layer transfers slice a Full Block without
conversion. Blocks are named by a prefix-chained hash, so a block id identifies its whole prefix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dualpath.errors import SpecError
from dualpath.validate import positive

PAPER_BLOCK_TOKENS = 64


@dataclass(frozen=True)
class KVLayout:
    """Byte geometry of a model's KV in storage and in flight."""

    num_layers: int
    kv_bytes_per_token_per_layer: int
    block_tokens: int = PAPER_BLOCK_TOKENS

    def __post_init__(self) -> None:
        caps = {"num_layers": "MAX_LAYERS", "kv_bytes_per_token_per_layer": "MAX_BYTES", "block_tokens": "MAX_TOKENS"}
        for name, cap in caps.items():
            positive("KVLayout", name, getattr(self, name), integer=True, cap=cap)

    @property
    def kv_bytes_per_token(self) -> int:
        return self.num_layers * self.kv_bytes_per_token_per_layer

    @property
    def layer_block_bytes(self) -> int:
        return self.block_tokens * self.kv_bytes_per_token_per_layer

    @property
    def full_block_bytes(self) -> int:
        return self.num_layers * self.layer_block_bytes

    def layer_offset_bytes(self, layer: int) -> int:
        """Where layer `layer`'s Layer Block starts inside a Full Block."""
        if not 0 <= layer < self.num_layers:
            raise SpecError("KVLayout", "layer", layer, f"0..{self.num_layers - 1}")
        return layer * self.layer_block_bytes

    def num_blocks(self, num_tokens: int) -> int:
        """Blocks needed to hold `num_tokens` tokens (the last one may be partial)."""
        return -(-num_tokens // self.block_tokens)

    def num_full_blocks(self, num_tokens: int) -> int:
        return num_tokens // self.block_tokens


def chain_block_ids(tokens: Sequence[int], block_tokens: int, salt: bytes = b"") -> list[str]:
    """Prefix-chained ids of the complete blocks of `tokens`: id_i = H(id_{i-1} || tokens of block i).

    Two prompts share block i's id exactly when they share every token up to the end of block i.
    """
    ids: list[str] = []
    previous = hashlib.blake2b(salt, digest_size=16).digest()
    for start in range(0, len(tokens) - block_tokens + 1, block_tokens):
        chunk = ",".join(str(int(t)) for t in tokens[start : start + block_tokens]).encode()
        previous = hashlib.blake2b(previous + chunk, digest_size=16).digest()
        ids.append(previous.hex())
    return ids


class PrefixTrie:
    """Trie of block ids. `match` answers how many leading blocks of a prompt are already stored.

    Because ids are prefix-chained a dict would do for chained ids, but traces such as Mooncake's give
    raw per-position ids, so the trie keys each block by its parent.
    """

    __slots__ = ("_children", "num_blocks")

    def __init__(self) -> None:
        self._children: dict[tuple[int, object], int] = {}
        self.num_blocks = 0

    def insert(self, block_ids: Iterable[object]) -> int:
        """Store a prompt's blocks; returns how many were new."""
        node, added = 0, 0
        for block_id in block_ids:
            key = (node, block_id)
            child = self._children.get(key)
            if child is None:
                self.num_blocks += 1
                child = self.num_blocks
                self._children[key] = child
                added += 1
            node = child
        return added

    def match(self, block_ids: Iterable[object]) -> int:
        """Number of leading blocks of `block_ids` already stored."""
        node, matched = 0, 0
        for block_id in block_ids:
            child = self._children.get((node, block_id))
            if child is None:
                break
            node, matched = child, matched + 1
        return matched

    def hit_tokens(self, block_ids: Sequence[object], num_tokens: int, block_tokens: int) -> int:
        """Leading tokens of a `num_tokens`-token prompt already stored (a partial last block counts)."""
        return min(self.match(block_ids) * block_tokens, num_tokens)

    def __len__(self) -> int:
        return self.num_blocks
