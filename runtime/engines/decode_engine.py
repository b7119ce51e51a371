"""The decode engine (DE): reserves at admission, reads on the DE-read path, decodes, persists blocks.

Its control messages (`messages`) come from PEs: `Admit` (DE HBM for the whole context and DE buffer
for the whole prompt, granted together or refused after a short wait), `Release` (undo), `Read` (hit
Full Blocks from storage into the request's buffer pages through this node's SNIC; it answers how many
leading blocks were read intact, dropping a corrupt one from storage), `LoadLayer` (write layer k
of the DE-read hit blocks into the PE's HBM slot), `Handoff` (prompt KV from the buffer into
HBM, `start_decode` frees the buffer, greedy decoding, `finish` frees the HBM). Decoding is
continuous batching (`decode_batcher`): one forward per step over every running sequence, requests
joining and leaving at step boundaries. Every Full Block the context completes and storage lacks is
persisted (through this node's SNIC) as soon as it is complete, and all of them before `finish`.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dualpath.errors import SpecError
from dualpath.kvlayout import chain_block_ids
from dualpath.protocol import ReadPath, RequestSizes, Resource, transfer_steps
from dualpath.runtime.engine import EngineOptions
from dualpath.runtime.engines.batch_log import BatchLog
from dualpath.runtime.engines.blockstore import BlockError
from dualpath.runtime.engines.buffers import BufferTimeoutError
from dualpath.runtime.engines.decode_batcher import DecodeBatcher, Sequence
from dualpath.runtime.engines.messages import Admit, Handoff, LoadLayer, Read, Release
from dualpath.runtime.engines.worker import EngineBase, Handlers, local_step
from dualpath.runtime.transports.control import Channel, Reply
from dualpath.runtime.transports.ratelimit import KV_LANE
from dualpath.runtime.transports.transport_types import WriteOp

LOCAL = {Resource.DE_BUFFER, Resource.DE_HBM}
STEPS = {step.name: step for step in transfer_steps(ReadPath.PE)}  # the DE's parts are path-independent


@dataclass(frozen=True)
class Admitted:
    """A request admitted here: what it reserved, and the persists its decode queued."""

    request: str
    sizes: RequestSizes
    pages: tuple[int, ...]
    channel: Channel
    persists: list[Future[Path]] = field(default_factory=list)


class DecodeEngine(EngineBase):
    role = "decode"

    def __init__(self, options: EngineOptions, secret: bytes | str) -> None:
        super().__init__(options, secret)
        self.buffer_mem = self.pool.add_paged(Resource.DE_BUFFER, self.node, self.layout.full_block_bytes,
                                              options.buffer_blocks, device=options.device, host=True)
        self.pool.add_counter(Resource.DE_HBM, self.name, options.hbm_bytes)
        self.buffer_region = self.transport.register("de_buffer", self.buffer_mem)
        self.buffer_blocks = self.codec.blocks_view(self.buffer_mem.tensor, options.buffer_blocks)
        self.writer = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-persist")
        self.admitted: dict[str, Admitted] = {}
        self._watched: set[Channel] = set()
        self.batches = BatchLog()  # sequences per decode step
        self.batcher = DecodeBatcher(self)

    def handlers(self) -> Handlers:
        return {**super().handlers(), Admit: self.on_admit, Release: self.on_release, Read: self.on_read,
                LoadLayer: self.on_load_layer, Handoff: self.on_handoff}

    def owners(self) -> dict[Resource, str]:
        return {Resource.DE_BUFFER: self.node, Resource.DE_HBM: self.name}

    def close(self) -> None:
        super().close()
        self.batcher.close()
        self.writer.shutdown(wait=True)

    def _admitted(self, request: str) -> Admitted:
        with self._lock:
            entry = self.admitted.get(request)
        if entry is None:
            raise SpecError(self.name, "request", request, "a request admitted at this DE")
        return entry

    # -- admission ---------------------------------------------------------------------------------
    def on_admit(self, channel: Channel, msg: Admit, payload: bytes) -> dict:
        request, sizes = msg.request, msg.sizes
        try:
            self.pool.step(request, local_step(STEPS["admit"], LOCAL), sizes, self.owners(), timeout_s=msg.wait_s)
        except BufferTimeoutError:
            return {"ok": False, "read_queue_bytes": self.read_queue_bytes}
        (lease,) = self.pool.leases(request, Resource.DE_BUFFER)
        with self._lock:
            self.admitted[request] = Admitted(request, sizes, lease.pages, channel)
            watch = channel not in self._watched
            self._watched.add(channel)
        if watch:
            channel.on_close(self._drop_channel)
        return {"ok": True, "pages": list(lease.pages), "read_queue_bytes": self.read_queue_bytes}

    def _drop_channel(self, channel: Channel) -> None:
        """A PE went away: free what its requests hold here."""
        with self._lock:
            self._watched.discard(channel)
            gone = [r for r, entry in self.admitted.items() if entry.channel is channel]
            for request in gone:
                del self.admitted[request]
        for request in gone:
            self.pool.release_all(request)

    def on_release(self, channel: Channel, msg: Release, payload: bytes) -> dict:
        with self._lock:
            self.admitted.pop(msg.request, None)
        return {"freed": self.pool.release_all(msg.request)}

    # -- DE-read path ------------------------------------------------------------------------------
    def on_read(self, channel: Channel, msg: Read, payload: bytes) -> dict:
        """Read hit blocks into pages first.. of the request; answers how many leading ones are intact."""
        entry = self._admitted(msg.request)
        fb, view = self.layout.full_block_bytes, self.buffer_mem.host_view
        pages = entry.pages[msg.first:msg.first + len(msg.blocks)]
        futures = self.read_blocks(msg.blocks, [view[page * fb:(page + 1) * fb] for page in pages])
        intact = len(futures)
        for i, future in enumerate(futures):
            try:
                future.result()
            except (BlockError, OSError):
                intact = min(intact, i)
        return {"ok": True, "blocks_read": intact}

    def on_load_layer(self, channel: Channel, msg: LoadLayer, payload: bytes) -> dict:
        entry = self._admitted(msg.request)
        layer, blocks, first = msg.layer, msg.blocks, msg.first_block
        lb, fb = self.layout.layer_block_bytes, self.layout.full_block_bytes
        remote = self.transport.remote_region(msg.pe_peer, "pe_slots")
        base = msg.slot_offset
        ops = [WriteOp(remote, base + i * lb, self.buffer_region, entry.pages[i] * fb + layer * lb, lb)
               for i in range(first, blocks)]
        self.transport.post(ops).wait(timeout_s=None)
        return {"ok": True}

    # -- handoff and decode ------------------------------------------------------------------------
    def on_handoff(self, channel: Channel, msg: Handoff, payload: bytes) -> Reply:
        entry = self._admitted(msg.request)
        torch, codec, cfg = self.torch, self.codec, self.decoder.config
        tokens = list(msg.tokens)
        max_new, hit_blocks = msg.max_new_tokens, msg.hit_blocks
        num_prompt, bt = len(tokens), self.layout.block_tokens
        kv = torch.empty((cfg.num_layers, 2, num_prompt + max_new, cfg.num_kv_heads, cfg.head_dim),
                         dtype=self.buffer_blocks.dtype, device=self.decoder.device)
        pages = torch.tensor(entry.pages, dtype=torch.long)
        blocks = self.buffer_blocks[pages]  # [blocks, L, 2, bt, kv_heads, head_dim], a gather out of the buffer
        if self.options.cnic_centric:
            self.cnic.acquire(blocks.numel() * blocks.element_size(), KV_LANE)
        flat = blocks.permute(1, 2, 0, 3, 4, 5).reshape(cfg.num_layers, 2, -1, cfg.num_kv_heads, cfg.head_dim)
        kv[:, :, :num_prompt].copy_(flat[:, :, :num_prompt])
        self.take_step(entry.request, STEPS["start_decode"], entry.sizes, self.owners(), LOCAL)
        context = [*tokens, msg.first_token]
        for block in range(hit_blocks, num_prompt // bt):
            self._persist(entry, kv, context, block)
        seq = Sequence(entry.request, kv, context, num_prompt, max_new,
                       lambda block: self._persist(entry, kv, context, block), msg.return_logits)
        try:
            self.batcher.decode(seq)
            for future in entry.persists:
                future.result()
        except BaseException:
            self.pool.release_all(entry.request)
            raise
        finally:
            with self._lock:
                dropped = self.admitted.pop(entry.request, None) is None
        if dropped:  # its PE went away mid-decode and `_drop_channel` already freed what it held
            raise SpecError(self.name, "request", entry.request, "a request whose prefill engine is still connected")
        self.take_step(entry.request, STEPS["finish"], entry.sizes, self.owners(), LOCAL)
        times = {**seq.times, "finish": time.time()}
        out = b""
        if msg.return_logits and seq.rows:
            out = codec.host_bytes(torch.stack(seq.rows).float()).tobytes()
        return {"tokens": context[num_prompt:], "times": times}, out

    def _persist(self, entry: Admitted, kv, context: list[int], block: int) -> None:
        """Queue a write of Full Block `block` (its KV is complete in `kv`) unless storage has it."""
        bt = self.layout.block_tokens
        ids = chain_block_ids(context[:(block + 1) * bt], bt)
        if ids[block] in self.store:
            return
        payload = self.codec.host_bytes(kv[:, :, block * bt:(block + 1) * bt])  # already a Full Block's layout
        if self.options.cnic_centric:
            self.cnic.acquire(payload.nbytes, KV_LANE)  # D2H goes through the CNIC too
        parent = ids[block - 1] if block else None
        entry.persists.append(self.writer.submit(self.store.write, ids[block], payload, parent))

    def stats(self) -> dict:
        with self._lock:
            requests = {r: e.sizes.context_bytes for r, e in self.admitted.items()}
        capacity = self.pool.ledger.capacity[(Resource.DE_HBM, self.name)]
        return {**super().stats(), "admitted": len(requests), "requests": requests,
                "free_hbm_bytes": capacity - self.pool.used(Resource.DE_HBM, self.name),
                "decode_batches": self.batches.stats()}
