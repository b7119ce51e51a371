"""The prefill engine (PE): admits a request with its DE, reads the hit KV, runs layerwise prefill.

Per request, on its own thread, the PE drives `transfer_steps(path)` in order: `admit` (DE HBM and
DE buffer at the DE, the PE buffer too on the PE-read path, all granted together or none kept),
`read` (hit Full Blocks from storage into the reader node's DRAM buffer), `start_prefill` (once the
engine's compute is free), per layer `layer_load` / `layer_send` / `layer_done`, and `handoff`, after
which the DE decodes. On the PE-read path layer k comes from the PE buffer (a local copy, paced by
the CNIC when CNIC-centric) and the full layer KV goes to the DE; on the DE-read path the DE writes
layer k into the PE's HBM slot and only the new tokens' KV goes back.

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
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, replace

from dualpath.errors import SpecError
from dualpath.kvlayout import chain_block_ids
from dualpath.protocol import ReadPath, RequestSizes, Resource, transfer_steps
from dualpath.runtime.engine import EngineOptions
from dualpath.runtime.engines.blockstore import BlockCorruptError, BlockError
from dualpath.runtime.engines.buffers import Memory
from dualpath.runtime.engines.layerwise import chunk_bounds, prefill_layerwise
from dualpath.runtime.engines.pe_layers import LOCAL, DeSink, SlotLoader
from dualpath.runtime.engines.worker import EngineBase, FifoLock, local_step
from dualpath.runtime.transports.control import Channel, ControlError, connect

LOG = logging.getLogger("dualpath.runtime.engine")
PATHS = ("pe", "de", "auto", "split")
READ_ERRORS = (BlockError, OSError)
ADMIT_WAIT_S = 0.05


@dataclass
class DeLink:
    """What a PE knows about one DE: control channel, transport peer, its buffer region."""

    channel: Channel
    name: str
    node: str
    engine: str
    buffer: object  # RemoteRegion of the DE's DRAM buffer


@dataclass
class Job:
    """One request inside the PE."""

    request: str
    tokens: list[int]
    max_new_tokens: int
    hit_blocks: int
    block_ids: list[str]
    sizes: RequestSizes
    de: DeLink
    path: ReadPath = ReadPath.PE
    de_pages: tuple[int, ...] = ()
    pe_blocks: int = 0  # leading hit blocks read through the PE node; the rest through the DE node
    lost_blocks: int = 0  # hit blocks that failed to read and were recomputed

    def owners(self, pe) -> dict[Resource, str]:
        return {Resource.PE_BUFFER: pe.node, Resource.PE_HBM_SLOT: pe.name, Resource.SEND_CREDIT: pe.name,
                Resource.DE_BUFFER: self.de.node, Resource.DE_HBM: self.de.engine}


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
        self.reader = ThreadPoolExecutor(options.read_threads, thread_name_prefix=f"{self.name}-read")
        self.compute = FifoLock()
        self.read_queue_bytes = 0
        self._des: dict[tuple[str, int], DeLink] = {}
        self._in_flight: set[str] = set()
        # What the scheduler's report needs: each request's phase and its tokens still to prefill.
        self._phase: dict[str, str] = {}
        self._prefill_tokens: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- peers -------------------------------------------------------------------------------------
    def de_link(self, address) -> DeLink:
        key = (str(address[0]), int(address[1]))
        with self._lock:
            link = self._des.get(key)
            if link is not None and link.channel.alive:
                return link
            channel = connect(key, self.secret, self.name)
            hello, _ = channel.call("hello")
            if hello["role"] != "decode":
                raise SpecError(self.name, "de", f"{key[0]}:{key[1]}", "the address of a decode engine")
            if hello["model_id"] != self.options.model_id():
                raise SpecError(self.name, "de model", hello["model_id"], f"the PE's model {self.options.model_id()}")
            peer = self.transport.connect(tuple(hello["data"]))
            link = DeLink(channel, peer, hello["node"], hello["name"], self.transport.remote_region(peer, "de_buffer"))
            self._des[key] = link
            return link

    def close(self) -> None:
        super().close()
        self.reader.shutdown(wait=False, cancel_futures=True)

    # -- the request -------------------------------------------------------------------------------
    def op_submit(self, channel: Channel, msg: dict, payload: bytes):
        times = {"arrival": time.time()}
        job = self._job(msg)
        requested = msg.get("path", "auto")
        if requested not in PATHS:
            raise SpecError(f"request {job.request}", "path", requested, "one of " + ", ".join(PATHS))
        pe_blocks = msg.get("pe_blocks")
        if requested == "split" and (not isinstance(pe_blocks, int) or pe_blocks < 0):
            raise SpecError(f"request {job.request}", "pe_blocks", pe_blocks,
                            "a non-negative integer (hit blocks to read through the PE node) with path split")
        chunk_bounds(len(job.tokens) - job.hit_blocks * self.layout.block_tokens, msg.get("chunk_tokens"))
        if not msg.get("layerwise", True) and self.options.num_slots < self.layout.num_layers:
            raise SpecError(f"request {job.request}", "layerwise", False,
                            f"an engine with one HBM slot per layer (num_slots >= {self.layout.num_layers})")
        with self._lock:
            if job.request in self._in_flight:
                raise SpecError(f"request {job.request}", "request", job.request, "an id not already in flight")
            self._in_flight.add(job.request)
            self._phase[job.request] = "waiting"
            self._prefill_tokens[job.request] = len(job.tokens) - job.hit_blocks * self.layout.block_tokens
        try:
            return self._serve(job, requested, pe_blocks, msg, times)
        finally:
            with self._lock:
                self._in_flight.discard(job.request)
                self._phase.pop(job.request, None)
                self._prefill_tokens.pop(job.request, None)

    def _set_phase(self, job: Job, phase: str) -> None:
        with self._lock:
            self._phase[job.request] = phase
            if phase == "decoding":
                self._prefill_tokens.pop(job.request, None)

    def _serve(self, job: Job, requested: str, pe_blocks: int | None, msg: dict, times: dict):
        try:
            self._admit(job, requested, pe_blocks)
            times["admitted"] = time.time()
            self._set_phase(job, "reading")
            self._read(job)
            times["read_done"] = time.time()
            with self.compute:
                self._set_phase(job, "prefilling")
                steps = self._steps(job)
                self.take_step(job.request, steps["start_prefill"], job.sizes, job.owners(self), LOCAL)
                times["prefill_start"] = time.time()
                logits = prefill_layerwise(self.decoder, job.tokens[job.hit_blocks * self.layout.block_tokens:],
                                           job.hit_blocks * self.layout.block_tokens, SlotLoader(self, job),
                                           DeSink(self, job), msg.get("chunk_tokens"),
                                           preload=not msg.get("layerwise", True))
            first = int(self.torch.argmax(logits))
            times["first_token"] = time.time()
            self._set_phase(job, "decoding")
            self.take_step(job.request, steps["handoff"], job.sizes, job.owners(self), LOCAL)
            reply, rows = job.de.channel.call(
                "handoff", timeout_s=None, request=job.request, tokens=job.tokens, first_token=first,
                max_new_tokens=job.max_new_tokens, hit_blocks=job.hit_blocks,
                return_logits=bool(msg.get("return_logits")))
        except BaseException:
            self.pool.release_all(job.request)
            with contextlib.suppress(ControlError):
                job.de.channel.call("release", request=job.request)
            raise
        times.update(reply["times"])
        out_payload = b""
        if msg.get("return_logits"):
            out_payload = self.codec.host_bytes(logits.float().reshape(1, -1)).tobytes() + rows
        fb = self.layout.full_block_bytes
        pe_read, de_read = job.pe_blocks * fb, (job.hit_blocks - job.pe_blocks) * fb
        path = "split" if pe_read and de_read else job.path.value
        return {"request": job.request, "tokens": reply["tokens"], "hit_tokens": job.hit_blocks * self.layout.block_tokens,
                "path": path, "pe": self.name, "de": job.de.engine, "times": times, "read_bytes": pe_read + de_read,
                "pe_read_bytes": pe_read, "de_read_bytes": de_read, "lost_blocks": job.lost_blocks}, out_payload

    def _job(self, msg: dict) -> Job:
        request = str(msg.get("request"))
        tokens = msg.get("tokens")
        vocab = self.decoder.config.vocab_size
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, int) and 0 <= t < vocab for t in tokens):
            raise SpecError(f"request {request}", "tokens", str(tokens)[:60], f"a non-empty list of ints in [0, {vocab})")
        max_new = msg.get("max_new_tokens")
        if not isinstance(max_new, int) or max_new < 1:
            raise SpecError(f"request {request}", "max_new_tokens", max_new, "a positive integer")
        if len(tokens) + max_new > self.options.max_context_tokens:
            raise SpecError(f"request {request}", "prompt + max_new_tokens", len(tokens) + max_new,
                            f"at most max_context_tokens = {self.options.max_context_tokens}")
        if msg.get("de") is None:
            raise SpecError(f"request {request}", "de", None, "the control address [host, port] of a decode engine")
        de = self.de_link(msg["de"])
        bt, per_token = self.layout.block_tokens, self.layout.kv_bytes_per_token
        block_ids = chain_block_ids(tokens, bt)
        hit = 0
        for block_id in block_ids[: (len(tokens) - 1) // bt]:  # at least one token is always computed
            if block_id not in self.store:
                break
            hit += 1
        sizes = RequestSizes(hit_bytes=hit * self.layout.full_block_bytes, prompt_bytes=len(tokens) * per_token,
                             context_bytes=(len(tokens) + max_new) * per_token, num_layers=self.layout.num_layers)
        return Job(request, tokens, max_new, hit, block_ids[:hit], sizes, de)

    @staticmethod
    def _steps(job: Job) -> dict:
        return {step.name: step for step in transfer_steps(job.path)}

    def _admit(self, job: Job, requested: str, pe_blocks: int | None) -> None:
        """DE part first (path-independent), then the PE buffer on the PE-read path; never hold one
        part while waiting for the other. The PE buffer holds the PE share of the hit (`sizes.hit_bytes`)."""
        pe_admit = transfer_steps(ReadPath.PE)[0]
        fb = self.layout.full_block_bytes
        while True:
            reply, _ = job.de.channel.call("admit", request=job.request, sizes=asdict(job.sizes), wait_s=ADMIT_WAIT_S)
            if not reply["ok"]:
                continue
            job.de_pages = tuple(reply["pages"])
            if requested == "auto":
                with self._lock:
                    pe_first = self.read_queue_bytes <= reply["read_queue_bytes"]
                share = job.hit_blocks if pe_first else 0
            else:
                share = {"pe": job.hit_blocks, "de": 0}.get(requested, min(pe_blocks or 0, job.hit_blocks))
            path = ReadPath.PE if share or requested == "pe" else ReadPath.DE
            job.sizes = replace(job.sizes, hit_bytes=share * fb)
            if path is ReadPath.PE:
                got = self.pool.try_step(job.request, local_step(pe_admit, LOCAL), job.sizes, job.owners(self))
                if got is None and requested == "auto":
                    path, share = ReadPath.DE, 0  # the DE's reservations are the same on both paths
                    job.sizes = replace(job.sizes, hit_bytes=0)
                elif got is None:
                    job.de.channel.call("release", request=job.request)
                    time.sleep(ADMIT_WAIT_S)
                    continue
            job.path, job.pe_blocks = path, share
            self.record(job.request, "admit", path=path.value, pe_blocks=share)
            with self._lock:
                self._phase[job.request] = "admitted"
            return

    def _read(self, job: Job) -> None:
        """Hit blocks [0, pe_blocks) through this node, [pe_blocks, hit_blocks) through the DE node, at
        once; a block that fails to read cuts the hit before it (the tokens after it are recomputed)."""
        steps = self._steps(job)
        self.take_step(job.request, steps["read"], job.sizes, job.owners(self), LOCAL, path=job.path.value,
                       blocks=job.hit_blocks, pe_blocks=job.pe_blocks)
        hit, share = job.hit_blocks, job.pe_blocks
        if not hit:
            return
        futures = []
        if share:
            (lease,) = self.pool.leases(job.request, Resource.PE_BUFFER)
            with self._lock:
                self.read_queue_bytes += share * self.layout.full_block_bytes
            futures = [self.reader.submit(self._read_block, block_id, lease.view(i))
                       for i, block_id in enumerate(job.block_ids[:share])]
        good = share
        try:
            if share < hit:
                reply, _ = job.de.channel.call("read", timeout_s=None, request=job.request,
                                               blocks=job.block_ids[share:hit], first=share)
                good = share + int(reply["blocks_read"])
        except BaseException:
            self._cancel_reads(futures)
            raise
        wait(futures)
        for i, future in enumerate(futures):
            if future.exception() is not None:
                if not isinstance(future.exception(), READ_ERRORS):
                    raise future.exception()
                good = min(good, i)
                break
        if good < hit:
            LOG.warning("%s: %s: hit block %d of %d unreadable; recomputing from there", self.name, job.request,
                        good, hit)
            job.lost_blocks = hit - good
            job.hit_blocks, job.pe_blocks, job.block_ids = good, min(share, good), job.block_ids[:good]

    def _cancel_reads(self, futures: list) -> None:
        """Unqueue reads not started and wait for the others: they write into the request's pages."""
        for future in futures:
            if future.cancel():
                with self._lock:
                    self.read_queue_bytes -= self.layout.full_block_bytes
        wait(futures)

    def _read_block(self, block_id: str, out) -> None:
        try:
            self.store.read_into(block_id, out)
        except BlockCorruptError:
            self.store.delete(block_id)  # never served again; the DE persists a recomputed copy
            raise
        finally:
            with self._lock:
                self.read_queue_bytes -= self.layout.full_block_bytes

    def stats(self) -> dict:
        with self._lock:
            phases = dict(self._phase)
            tokens = sum(self._prefill_tokens.values())
            num_seqs = len(self._prefill_tokens)
        return {**super().stats(), "read_queue_bytes": self.read_queue_bytes, "requests": phases,
                "num_seqs": num_seqs, "num_tokens": tokens}
