"""The prefix index of stored KV blocks, fed by the KV events engines publish.

vLLM and SGLang publish `BlockStored` (block hashes, the parent of the first, the block size),
`BlockRemoved` (hashes) and `AllBlocksCleared`. A route request may then carry its prompt's block
hashes instead of a hit count: the hit is the leading run of blocks some engine still stores.

Why not `kvlayout.PrefixTrie`: it has no removal, and `BlockRemoved` names a block by its hash alone.
Here each hash keeps its parent, so a match also checks the chain (ids that are not prefix-chained,
such as a trace's per-position ids, cannot match a different prefix), and a per-engine holder count,
so a block stays while any engine stores it (DualPath's storage is shared by all nodes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BlockHash = int | str


@dataclass
class _Block:
    parent: BlockHash | None
    holders: set[str] = field(default_factory=set)  # engine ids that reported it stored


class StoredBlocks:
    """Blocks some engine stores, by hash, with the parent each was stored under."""

    def __init__(self) -> None:
        self._blocks: dict[BlockHash, _Block] = {}
        self._by_engine: dict[str, set[BlockHash]] = {}

    def stored(self, engine: str, block_hashes: Sequence[BlockHash], parent: BlockHash | None) -> int:
        """`BlockStored`: a chain of blocks under `parent` (None: the prompt's first). Returns new blocks."""
        added = 0
        held = self._by_engine.setdefault(engine, set())
        for h in block_hashes:
            block = self._blocks.get(h)
            if block is None:
                block = self._blocks[h] = _Block(parent)
                added += 1
            block.parent = parent  # the latest report wins: hashes are content hashes, a re-store is the same
            block.holders.add(engine)
            held.add(h)
            parent = h
        return added

    def removed(self, engine: str, block_hashes: Iterable[BlockHash]) -> int:
        """`BlockRemoved`: the engine no longer stores these. Returns blocks no engine stores any more."""
        gone = 0
        held = self._by_engine.get(engine, set())
        for h in block_hashes:
            block = self._blocks.get(h)
            held.discard(h)
            if block is None:
                continue
            block.holders.discard(engine)
            if not block.holders:
                del self._blocks[h]
                gone += 1
        return gone

    def cleared(self, engine: str) -> int:
        """`AllBlocksCleared` (or the engine left): drop everything it held."""
        return self.removed(engine, list(self._by_engine.pop(engine, ())))

    def match(self, block_hashes: Iterable[BlockHash]) -> int:
        """Leading blocks stored, each under the previous one (the first under none)."""
        parent: BlockHash | None = None
        matched = 0
        for h in block_hashes:
            block = self._blocks.get(h)
            if block is None or block.parent != parent:
                break
            parent, matched = h, matched + 1
        return matched

    def __len__(self) -> int:
        return len(self._blocks)
