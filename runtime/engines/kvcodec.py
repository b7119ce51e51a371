"""KV tensors <-> Full Block bytes.

A Layer Block is K then V for the block's tokens, each [block_tokens, kv_heads, head_dim] in the KV
dtype; a Full Block is the Layer Blocks of layers 0..L-1 concatenated (`dualpath.kvlayout`). A run of
Full Blocks is therefore one tensor [blocks, L, 2, block_tokens, kv_heads, head_dim] and a run of one
layer's Layer Blocks (what an HBM layer slot holds) is [blocks, 2, block_tokens, kv_heads, head_dim]:
views over raw bytes, so moving a layer is a strided copy and never a conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualpath.errors import SpecError, require
from dualpath.kvlayout import KVLayout
from dualpath.runtime.engines.decoder import DecoderConfig, torch_dtype

_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class KVCodec:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_tokens: int = 16
    kv_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kv_dtype not in _ITEMSIZE:
            raise SpecError("KVCodec", "kv_dtype", self.kv_dtype, "one of " + ", ".join(_ITEMSIZE))

    @classmethod
    def for_model(cls, config: DecoderConfig, block_tokens: int = 16, kv_dtype: str | None = None) -> KVCodec:
        return cls(config.num_layers, config.num_kv_heads, config.head_dim, block_tokens,
                   kv_dtype or config.dtype)

    @property
    def layout(self) -> KVLayout:
        per_token = 2 * self.num_kv_heads * self.head_dim * _ITEMSIZE[self.kv_dtype]
        return KVLayout(self.num_layers, per_token, self.block_tokens)

    # -- views over bytes --------------------------------------------------------------------------
    def _typed(self, raw, num_bytes: int):
        torch = require("torch", "runtime")
        if not isinstance(raw, torch.Tensor):
            raw = torch.frombuffer(raw, dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
        if raw.dtype != torch.uint8 or raw.dim() != 1:
            raise SpecError("KVCodec", "buffer", f"{raw.dtype} {tuple(raw.shape)}", "a 1-D uint8 buffer")
        if raw.numel() < num_bytes:
            raise SpecError("KVCodec", "buffer", f"{raw.numel()} bytes", f"at least {num_bytes} bytes")
        return raw[:num_bytes].view(torch_dtype(self.kv_dtype))

    def blocks_view(self, raw, num_blocks: int):
        """[blocks, L, 2, block_tokens, kv_heads, head_dim] over `num_blocks` Full Blocks of `raw`."""
        typed = self._typed(raw, num_blocks * self.layout.full_block_bytes)
        return typed.view(num_blocks, self.num_layers, 2, self.block_tokens, self.num_kv_heads, self.head_dim)

    def layer_view(self, raw, num_blocks: int):
        """[blocks, 2, block_tokens, kv_heads, head_dim] over `num_blocks` Layer Blocks of `raw`."""
        typed = self._typed(raw, num_blocks * self.layout.layer_block_bytes)
        return typed.view(num_blocks, 2, self.block_tokens, self.num_kv_heads, self.head_dim)

    def row_view(self, raw, num_rows: int):
        """[rows, kv_heads, head_dim] over `num_rows` token rows of K or V in `raw`."""
        return self._typed(raw, num_rows * self.row_bytes).view(num_rows, self.num_kv_heads, self.head_dim)

    # -- tensors <-> block views -------------------------------------------------------------------
    def layer_kv(self, layer_blocks, num_tokens: int):
        """(K, V) [num_tokens, kv_heads, head_dim] of a layer-block run (a slot or `blocks[:, layer]`)."""
        k = layer_blocks[:, 0].reshape(-1, self.num_kv_heads, self.head_dim)[:num_tokens]
        v = layer_blocks[:, 1].reshape(-1, self.num_kv_heads, self.head_dim)[:num_tokens]
        return k, v

    def write_tokens(self, layer_blocks, first_token: int, k, v) -> None:
        """Store K/V of tokens first_token.. into a layer-block run, block by block (no reshape copies)."""
        bt = self.block_tokens
        done, total = 0, k.shape[0]
        while done < total:
            pos = first_token + done
            block, offset = divmod(pos, bt)
            n = min(bt - offset, total - done)
            layer_blocks[block, 0, offset:offset + n].copy_(k[done:done + n])
            layer_blocks[block, 1, offset:offset + n].copy_(v[done:done + n])
            done += n

    @property
    def row_bytes(self) -> int:
        """Bytes of one token's K (or V) in one layer."""
        return self.num_kv_heads * self.head_dim * _ITEMSIZE[self.kv_dtype]

    def token_spans(self, first_token: int, num_tokens: int) -> list[tuple[int, int, int, int, int]]:
        """Where tokens first_token.. land in a run of Layer Blocks, as contiguous byte spans.

        Each span is (block, part, byte offset inside that Layer Block, first row, rows) with part 0
        for K and 1 for V; rows count from `first_token`.
        """
        bt, row = self.block_tokens, self.row_bytes
        spans, done = [], 0
        while done < num_tokens:
            block, offset = divmod(first_token + done, bt)
            n = min(bt - offset, num_tokens - done)
            spans.append((block, 0, offset * row, done, n))
            spans.append((block, 1, (bt + offset) * row, done, n))
            done += n
        return spans

    def host_bytes(self, tensor) -> memoryview:
        """A tensor in the KV dtype as flat host bytes (a D2H copy for device tensors)."""
        torch = require("torch", "runtime")
        flat = tensor.to(dtype=torch_dtype(self.kv_dtype)).contiguous().view(torch.uint8).reshape(-1)
        return memoryview(flat.cpu().numpy())

    def encode_full_block(self, kv_per_layer, first_token: int = 0) -> bytes:
        """Bytes of one Full Block from [(K, V)] per layer holding exactly its block_tokens tokens."""
        torch = require("torch", "runtime")
        out = torch.zeros(self.layout.full_block_bytes, dtype=torch.uint8)
        blocks = self.blocks_view(out, 1)
        for layer, (k, v) in enumerate(kv_per_layer):
            self.write_tokens(blocks[:, layer], 0, k[first_token:first_token + self.block_tokens],
                              v[first_token:first_token + self.block_tokens])
        return out.numpy().tobytes()
