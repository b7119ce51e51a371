"""The prefill engine (PE): admits a request with its DE, reads the hit KV, runs layerwise prefill.

Per request, on its own thread, the PE drives `transfer_steps(path)` in order: `admit` (DE HBM and
DE buffer at the DE, the PE buffer too on the PE-read path, all granted together or none kept),
`read` (hit Full Blocks from storage into the reader node's DRAM buffer); the request then queues for
the engine's forward batches (`prefill_batcher`: the policy's `form_batch`, quota and chunking), whose
thread takes `start_prefill` at its first chunk and per chunk and layer `layer_load` / `layer_send` /
`layer_done`; then `handoff`, after which the DE decodes. On the PE-read path layer k comes from the
PE buffer (a local copy, paced by the CNIC when CNIC-centric) and the full layer KV goes to the DE;
on the DE-read path the DE writes layer k into the PE's HBM slot and only the new tokens' KV goes back.

A split read (path "split", `pe_blocks` of the hit blocks through the PE node, the rest through the
DE node) takes the PE-read steps with the PE share as the hit it buffers; the DE share lands in DE
buffer pages that admission already reserved, as on the DE-read path, so the protocol's steps and
reservations cover it. A hit block that fails to read (missing, or a checksum mismatch) is dropped
from storage and the hit is cut before it: those tokens are recomputed, and the DE persists them again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from concurrent.futures import Future, wait
from dataclasses import replace

from dualpath.errors import SpecError
from dualpath.protocol import Phase, ReadPath, Resource, transfer_steps
from dualpath.runtime.engine import EngineOptions
from dualpath.runtime.engines.batch_log import BatchLog
from dualpath.runtime.engines.blockstore import BlockError
from dualpath.runtime.engines.buffers import Memory
from dualpath.runtime.engines.messages import Admit, Handoff, Hello, Read, ReadChoice, Release, Submit
from dualpath.runtime.engines.pe_job import DeLink, Job, open_job
from dualpath.runtime.engines.pe_layers import LOCAL
from dualpath.runtime.engines.prefill_batcher import PrefillBatcher
from dualpath.runtime.engines.worker import EngineBase, Handlers, local_step
from dualpath.runtime.transports.control import Channel, ControlError, Reply, connect

LOG = logging.getLogger("dualpath.runtime.engine")
READ_ERRORS = (BlockError, OSError)
ADMIT_WAIT_S = 0.05


class PrefillEngine(EngineBase):
    role = "prefill"

    def __init__(self, options: EngineOptions, secret: bytes | str) -> None:
        super().__init__(options, secret)
        layout, dev = self.layout, options.device
        max_blocks = -(-options.max_context_tokens // layout.block_tokens)
        self.slot_bytes = max_blocks * layout.layer_block_bytes
        self.buffer_mem = self.pool.add_paged(Resource.PE_BUFFER, self.node, layout.full_block_bytes,
                                              options.buffer_blocks, device=dev, host=True)
        self.slot_mem = self.pool.add_slots(Resource.PE_HBM_SLOT, self.name, self.slot_bytes, options.num_slots,
                                            device=dev)
        self.pool.add_counter(Resource.SEND_CREDIT, self.name, options.send_credits)
        self.buffer_region = self.transport.register("pe_buffer", self.buffer_mem)
        self.slot_region = self.transport.register("pe_slots", self.slot_mem)
        # New KV leaves from registered memory (one-sided writes need it on verbs): one staging piece
        # per send credit, so a request holding a credit always finds a free piece.
        self.stage_bytes = 2 * options.max_context_tokens * self.codec.row_bytes
        self.stage_mem = Memory.allocate(self.stage_bytes * options.send_credits, dev, host=not dev.startswith("cuda"))
        self.stage_region = self.transport.register("pe_stage", self.stage_mem)
        self.free_stages: queue.Queue[int] = queue.Queue()
        for piece in range(options.send_credits):
            self.free_stages.put(piece)
        self.batches = BatchLog()  # requests per prefill forward
        self._des: dict[tuple[str, int], DeLink] = {}
        self._in_flight: set[str] = set()
        # What the scheduler's report needs: each request's phase and its tokens still to prefill.
        self._phase: dict[str, Phase] = {}
        self._prefill_tokens: dict[str, int] = {}
        self.batcher = PrefillBatcher(self)

    def close(self) -> None:
        super().close()
        self.batcher.close()

    def handlers(self) -> Handlers:
        return {**super().handlers(), Submit: self.on_submit}

    # -- peers -------------------------------------------------------------------------------------
    def de_link(self, address: tuple[str, int]) -> DeLink:
        key = (str(address[0]), int(address[1]))
        with self._lock:
            link = self._des.get(key)
            if link is not None and link.channel.alive:
                return link
            channel = connect(key, self.secret, self.name)
            hello, _ = channel.call(Hello())
            if hello["role"] != "decode":
                raise SpecError(self.name, "de", f"{key[0]}:{key[1]}", "the address of a decode engine")
            if hello["model_id"] != self.options.model_id():
                raise SpecError(self.name, "de model", hello["model_id"], f"the PE's model {self.options.model_id()}")
            peer = self.transport.connect(tuple(hello["data"]))
            link = DeLink(channel, peer, hello["node"], hello["name"], self.transport.remote_region(peer, "de_buffer"))
            self._des[key] = link
            return link

    # -- the request -------------------------------------------------------------------------------
    def on_submit(self, channel: Channel, msg: Submit, payload: bytes) -> Reply:
        times = {"arrival": time.time()}
        job = open_job(self, msg)
        with self._lock:
            if job.request in self._in_flight:
                raise SpecError(f"request {job.request}", "request", job.request, "an id not already in flight")
            self._in_flight.add(job.request)
            self._phase[job.request] = Phase.WAITING
            self._prefill_tokens[job.request] = len(job.tokens) - job.hit_blocks * self.layout.block_tokens
        try:
            return self._serve(job, msg, times)
        finally:
            with self._lock:
                self._in_flight.discard(job.request)
                self._phase.pop(job.request, None)
                self._prefill_tokens.pop(job.request, None)

    def set_phase(self, job: Job, phase: Phase) -> None:
        with self._lock:
            self._phase[job.request] = phase
            if phase is Phase.DECODING:
                self._prefill_tokens.pop(job.request, None)

    def _serve(self, job: Job, msg: Submit, times: dict[str, float]) -> Reply:
        try:
            self._admit(job, msg.path, msg.pe_blocks)
            times["admitted"] = time.time()
            self.set_phase(job, Phase.READING)
            self._read(job)
            times["read_done"] = time.time()
            hit_tokens = job.hit_blocks * self.layout.block_tokens  # a failed read may have cut the hit
            logits = self.batcher.prefill(job, hit_tokens, msg.chunk_tokens, msg.layerwise, times)
            first = int(self.torch.argmax(logits))
            times["first_token"] = time.time()
            self.set_phase(job, Phase.DECODING)
            self.take_step(job.request, job.steps["handoff"], job.sizes, job.owners(self), LOCAL)
            handoff = Handoff(job.request, tuple(job.tokens), first, job.max_new_tokens, job.hit_blocks,
                              msg.return_logits)
            reply, rows = job.de.channel.call(handoff, timeout_s=None)
        except BaseException:
            self.pool.release_all(job.request)
            with contextlib.suppress(ControlError):
                job.de.channel.call(Release(job.request))
            raise
        times.update(reply["times"])
        out_payload = b""
        if msg.return_logits:
            out_payload = self.codec.host_bytes(logits.float().reshape(1, -1)).tobytes() + rows
        fb = self.layout.full_block_bytes
        pe_read, de_read = job.pe_blocks * fb, (job.hit_blocks - job.pe_blocks) * fb
        path = "split" if pe_read and de_read else job.path.value
        return {"request": job.request, "tokens": reply["tokens"], "hit_tokens": hit_tokens, "path": path,
                "pe": self.name, "de": job.de.engine, "times": times, "read_bytes": pe_read + de_read,
                "pe_read_bytes": pe_read, "de_read_bytes": de_read, "lost_blocks": job.lost_blocks}, out_payload

    def _admit(self, job: Job, requested: ReadChoice, pe_blocks: int | None) -> None:
        """DE part first (path-independent), then the PE buffer on the PE-read path; never hold one
        part while waiting for the other. The PE buffer holds the PE share of the hit (`sizes.hit_bytes`)."""
        pe_admit = transfer_steps(ReadPath.PE)[0]
        fb = self.layout.full_block_bytes
        while True:
            reply, _ = job.de.channel.call(Admit(job.request, job.sizes, ADMIT_WAIT_S))
            if not reply["ok"]:
                continue
            job.de_pages = tuple(reply["pages"])
            if requested is ReadChoice.AUTO:
                with self._lock:
                    pe_first = self.read_queue_bytes <= reply["read_queue_bytes"]
                share = job.hit_blocks if pe_first else 0
            elif requested is ReadChoice.SPLIT:
                share = min(pe_blocks or 0, job.hit_blocks)
            else:
                share = job.hit_blocks if requested is ReadChoice.PE else 0
            path = ReadPath.PE if share or requested is ReadChoice.PE else ReadPath.DE
            job.sizes = replace(job.sizes, hit_bytes=share * fb)
            if path is ReadPath.PE:
                got = self.pool.try_step(job.request, local_step(pe_admit, LOCAL), job.sizes, job.owners(self))
                if got is None and requested is ReadChoice.AUTO:
                    path, share = ReadPath.DE, 0  # the DE's reservations are the same on both paths
                    job.sizes = replace(job.sizes, hit_bytes=0)
                elif got is None:
                    job.de.channel.call(Release(job.request))
                    time.sleep(ADMIT_WAIT_S)
                    continue
            job.path, job.pe_blocks = path, share
            self.record(job.request, "admit", path=path.value, pe_blocks=share)
            with self._lock:
                self._phase[job.request] = Phase.ADMITTED
            return

    def _read(self, job: Job) -> None:
        """Hit blocks [0, pe_blocks) through this node, [pe_blocks, hit_blocks) through the DE node, at
        once; a block that fails to read cuts the hit before it (the tokens after it are recomputed)."""
        self.take_step(job.request, job.steps["read"], job.sizes, job.owners(self), LOCAL, path=job.path.value,
                       blocks=job.hit_blocks, pe_blocks=job.pe_blocks)
        hit, share = job.hit_blocks, job.pe_blocks
        if not hit:
            return
        futures: list[Future[None]] = []
        if share:
            (lease,) = self.pool.leases(job.request, Resource.PE_BUFFER)
            futures = self.read_blocks(job.block_ids[:share], [lease.view(i) for i in range(share)])
        good = share
        try:
            if share < hit:
                reply, _ = job.de.channel.call(Read(job.request, tuple(job.block_ids[share:hit]), share),
                                               timeout_s=None)
                good = share + int(reply["blocks_read"])
        except BaseException:
            self._cancel_reads(futures)
            raise
        wait(futures)
        for i, future in enumerate(futures):
            error = future.exception()
            if error is not None:
                if not isinstance(error, READ_ERRORS):
                    raise error
                good = min(good, i)
                break
        if good < hit:
            LOG.warning("%s: %s: hit block %d of %d unreadable; recomputing from there", self.name, job.request,
                        good, hit)
            job.lost_blocks = hit - good
            job.hit_blocks, job.pe_blocks, job.block_ids = good, min(share, good), job.block_ids[:good]

    def _cancel_reads(self, futures: list[Future[None]]) -> None:
        """Unqueue reads not started and wait for the others: they write into the request's pages."""
        for future in futures:
            if future.cancel():
                with self._lock:
                    self.read_queue_bytes -= self.layout.full_block_bytes
        wait(futures)

    def stats(self) -> dict:
        with self._lock:
            phases = dict(self._phase)
            tokens = sum(self._prefill_tokens.values())
            num_seqs = len(self._prefill_tokens)
        return {**super().stats(), "requests": phases, "num_seqs": num_seqs, "num_tokens": tokens,
                "prefill_batches": self.batches.stats()}
