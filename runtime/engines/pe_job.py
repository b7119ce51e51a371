"""A request inside a prefill engine (`Job`), the DE it goes to (`DeLink`), and how a `Submit` opens one.

`open_job` checks what only the engine can (token ids against its vocabulary, the context against
its `max_context_tokens`, prefill without layer slots against its slots, the chunk size against the
prompt) and counts the hit: the leading Full Blocks of the prompt that storage holds, always leaving
at least one token to compute. The read path is chosen at admission (`PrefillEngine._admit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dualpath.errors import SpecError
from dualpath.kvlayout import chain_block_ids
from dualpath.protocol import ReadPath, RequestSizes, Resource, Step, transfer_steps
from dualpath.runtime.engines.layerwise import chunk_bounds
from dualpath.runtime.engines.messages import ReadChoice, Submit
from dualpath.runtime.transports.control import Channel
from dualpath.runtime.transports.transport_types import RemoteRegion

if TYPE_CHECKING:
    from dualpath.runtime.engines.prefill_engine import PrefillEngine


@dataclass(frozen=True)
class DeLink:
    """What a PE knows about one DE: control channel, transport peer, its buffer region."""

    channel: Channel
    name: str  # the DE's transport peer
    node: str
    engine: str
    buffer: RemoteRegion  # the DE's DRAM buffer


@dataclass
class Job:
    """One request inside the PE; admission picks its path, and a failed hit read cuts its hit."""

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

    def owners(self, pe: PrefillEngine) -> dict[Resource, str]:
        return {Resource.PE_BUFFER: pe.node, Resource.PE_HBM_SLOT: pe.name, Resource.SEND_CREDIT: pe.name,
                Resource.DE_BUFFER: self.de.node, Resource.DE_HBM: self.de.engine}

    @property
    def steps(self) -> dict[str, Step]:
        """The protocol steps of the job's (current) path, by name."""
        return {step.name: step for step in transfer_steps(self.path)}


def open_job(pe: PrefillEngine, msg: Submit) -> Job:
    """The job of `msg` on `pe`, its DE connected, or `SpecError` naming the field the engine refuses."""
    request, tokens, max_new = msg.request, list(msg.tokens), msg.max_new_tokens
    vocab, layout = pe.decoder.config.vocab_size, pe.layout
    if not tokens or not all(0 <= t < vocab for t in tokens):
        raise SpecError(f"request {request}", "tokens", str(tokens)[:60], f"a non-empty list of ints in [0, {vocab})")
    if max_new < 1:
        raise SpecError(f"request {request}", "max_new_tokens", max_new, "a positive integer")
    if len(tokens) + max_new > pe.options.max_context_tokens:
        raise SpecError(f"request {request}", "prompt + max_new_tokens", len(tokens) + max_new,
                        f"at most max_context_tokens = {pe.options.max_context_tokens}")
    de = pe.de_link(msg.de)
    bt, per_token = layout.block_tokens, layout.kv_bytes_per_token
    block_ids = chain_block_ids(tokens, bt)
    hit = 0
    for block_id in block_ids[: (len(tokens) - 1) // bt]:  # at least one token is always computed
        if block_id not in pe.store:
            break
        hit += 1
    if msg.path is ReadChoice.SPLIT and (msg.pe_blocks is None or msg.pe_blocks < 0):
        raise SpecError(f"request {request}", "pe_blocks", msg.pe_blocks,
                        "a non-negative integer (hit blocks to read through the PE node) with path split")
    chunk_bounds(len(tokens) - hit * bt, msg.chunk_tokens)
    if not msg.layerwise and pe.options.num_slots < layout.num_layers:
        raise SpecError(f"request {request}", "layerwise", False,
                        f"an engine with one HBM slot per layer (num_slots >= {layout.num_layers})")
    sizes = RequestSizes(hit_bytes=hit * layout.full_block_bytes, prompt_bytes=len(tokens) * per_token,
                         context_bytes=(len(tokens) + max_new) * per_token, num_layers=layout.num_layers)
    return Job(request, tokens, max_new, hit, block_ids[:hit], sizes, de)
