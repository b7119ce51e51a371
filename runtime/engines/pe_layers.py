"""How a PE moves one request's layers: `SlotLoader` fills HBM layer slots, `DeSink` ships KV to the DE.

They plug into `prefill_batch` (`layerwise`). On the PE-read path the loader copies layer k of the hit blocks
from the PE's DRAM buffer into a slot (`copy_local`, paced by the CNIC when CNIC-centric) and the sink
sends the full layer (hit part straight from the slot, new part from a staging piece); on the DE-read
path the DE writes the hit layer into the slot and the sink sends only the new tokens' KV. A split
read does both: blocks [0, pe_blocks) come from the PE buffer and go on to the DE, the rest the DE
writes into the slot. Each action is the protocol step of the same name, taken through the PE's
buffer pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualpath.protocol import Resource, transfer_steps
from dualpath.runtime.engines.layerwise import LayerHandle
from dualpath.runtime.engines.messages import LoadLayer
from dualpath.runtime.transports.transport_types import CopyOp, WriteOp

if TYPE_CHECKING:
    from dualpath.runtime.engines.pe_job import Job
    from dualpath.runtime.engines.prefill_engine import PrefillEngine

LOCAL = {Resource.PE_BUFFER, Resource.PE_HBM_SLOT, Resource.SEND_CREDIT}


class SlotLoader:
    """Brings layer k's hit KV into an HBM slot: from the PE buffer, or written there by the DE."""

    def __init__(self, pe: PrefillEngine, job: Job) -> None:
        self.pe, self.job = pe, job
        self.steps = {step.name: step for step in transfer_steps(job.path)}

    def load(self, chunk: int, layer: int) -> LayerHandle:
        pe, job, layout = self.pe, self.job, self.pe.layout
        (slot,) = pe.take_step(job.request, self.steps["layer_load"], job.sizes, job.owners(pe), LOCAL,
                               layer=layer, chunk=chunk)
        offset = slot.pages[0] * pe.slot_bytes
        lb, n, share = layout.layer_block_bytes, job.hit_blocks, job.pe_blocks
        if share:
            (lease,) = pe.pool.leases(job.request, Resource.PE_BUFFER)
            pe.transport.copy_local([CopyOp(pe.slot_region, offset + i * lb, pe.buffer_region,
                                            lease.offsets[i] + layer * lb, lb) for i in range(share)])
        if n > share:
            job.de.channel.call(LoadLayer(job.request, layer, offset, pe.name, n, share))
        view = pe.codec.layer_view(pe.slot_mem.tensor[offset:offset + n * lb], n)
        k, v = pe.codec.layer_kv(view, n * layout.block_tokens)
        return LayerHandle(chunk, layer, k, v, slot=slot, extra={"offset": offset, "sent": False})

    def release(self, handle: LayerHandle) -> None:
        pe, job = self.pe, self.job
        if handle.extra["sent"]:
            pe.take_step(job.request, self.steps["layer_done"], job.sizes, job.owners(pe), LOCAL,
                         layer=handle.layer, chunk=handle.chunk)
        else:  # a failed send: free the slot alone; the request's failure path frees the rest
            pe.pool.release(job.request, Resource.PE_HBM_SLOT, pe.name, 1)


class DeSink:
    """Sends one layer's KV into the DE's buffer: the PE-read hit blocks (all on the PE-read path) and
    the new tokens."""

    def __init__(self, pe: PrefillEngine, job: Job) -> None:
        self.pe, self.job = pe, job
        self.steps = {step.name: step for step in transfer_steps(job.path)}

    def send(self, handle: LayerHandle, first_token: int, k_new, v_new) -> None:
        pe, job, layout = self.pe, self.job, self.pe.layout
        pe.take_step(job.request, self.steps["layer_send"], job.sizes, job.owners(pe), LOCAL,
                     layer=handle.layer, chunk=handle.chunk)
        lb, fb, layer = layout.layer_block_bytes, layout.full_block_bytes, handle.layer
        remote, pages = job.de.buffer, job.de_pages
        ops = []
        if handle.chunk == 0:  # hit blocks the PE read; the DE holds the ones it read
            ops += [WriteOp(remote, pages[i] * fb + layer * lb, pe.slot_region, handle.extra["offset"] + i * lb, lb)
                    for i in range(job.pe_blocks)]
        piece = pe.free_stages.get_nowait()  # never empty: pieces = credits and this send holds one
        try:
            base = piece * pe.stage_bytes
            num_new, row = k_new.shape[0], pe.codec.row_bytes
            staged = pe.codec.row_view(pe.stage_mem.tensor[base:base + 2 * num_new * row], 2 * num_new)
            staged[:num_new].copy_(k_new)
            staged[num_new:].copy_(v_new)
            for block, part, offset, first_row, rows in pe.codec.token_spans(first_token, num_new):
                ops.append(WriteOp(remote, pages[block] * fb + layer * lb + offset, pe.stage_region,
                                   base + (part * num_new + first_row) * row, rows * row))
            pe.transport.post(ops).wait(timeout_s=None)
        finally:
            pe.free_stages.put(piece)
        handle.extra["sent"] = True
