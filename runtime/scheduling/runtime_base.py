"""`RuntimeBase`: what a run needs of a cluster's engines, however they were started.

`LocalRuntime` starts the engines on this machine; `AttachedRuntime` attaches to engines that any
launcher started elsewhere. Both hand `run_real` the same things: the engines' handles and a client,
the model in this process (the agents' vocabulary, `--verify`'s recompute), a view of the shared block
store (the scheduler's hit counts, emptied between runs), and `scheduling(policy)`, which starts a
`Scheduler` and points the engines' group leaders at it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Self

from dualpath.cluster import ClusterSpec
from dualpath.errors import DualpathError, SpecError
from dualpath.kvlayout import chain_block_ids
from dualpath.llm import AttentionKind, LLMSpec
from dualpath.policy import Policy
from dualpath.runtime.engines.messages import Lead
from dualpath.runtime.scheduling.client import ClusterClient
from dualpath.runtime.scheduling.scheduler import EngineHandle, Scheduler
from dualpath.runtime.transports.auth import DEFAULT_BIND_HOST


def decoder_fields(llm: LLMSpec) -> dict:
    """DecoderConfig fields of a dense Llama/Qwen2-style `llm`; the FFN width is recovered from its
    parameter count (the count `models` derives from the architecture)."""
    if llm.attention is AttentionKind.MLA:
        raise SpecError(f"model {llm.name}", "attention", llm.attention.value,
                        "a dense GQA/MHA model for the real runtime (the tiny model, for instance)")
    dtypes = {4: "float32", 2: "bfloat16"}
    if llm.kv_dtype_bytes not in dtypes:
        raise SpecError(f"model {llm.name}", "kv_dtype_bytes", llm.kv_dtype_bytes, "4 (float32) or 2 (bfloat16)")
    h, q, kv = llm.hidden_size, llm.num_heads * llm.head_dim, llm.num_kv_heads * llm.head_dim
    per_layer = (llm.active_params - h - llm.vocab_size * h) / llm.num_layers
    for bias in (False, True):
        attention = 2 * h * q + 2 * h * kv + ((q + 2 * kv) if bias else 0)
        ffn = (per_layer - attention - 2 * h) / (3 * h)
        if ffn >= 1 and abs(ffn - round(ffn)) < 1e-6:
            return {"vocab_size": llm.vocab_size, "hidden_size": h, "intermediate_size": round(ffn),
                    "num_layers": llm.num_layers, "num_heads": llm.num_heads, "num_kv_heads": llm.num_kv_heads,
                    "head_dim": llm.head_dim, "attention_bias": bias, "dtype": dtypes[llm.kv_dtype_bytes]}
    raise SpecError(f"model {llm.name}", "active_params", llm.active_params,
                    "the parameter count of a Llama/Qwen2-style decoder of this shape")


class RuntimeBase:
    """The engines of `cluster` running `llm`, their block store at `store_dir`; a context manager.
    Subclasses start or attach to the engines (`start`), and say which are dead and how to stop them."""

    def __init__(self, cluster: ClusterSpec, llm: LLMSpec, store_dir: Path, secret: bytes, *, block_tokens: int,
                 max_context_tokens: int, seed: int, scheduler_host: str = DEFAULT_BIND_HOST) -> None:
        from dualpath.runtime.engines.blockstore import BlockStore
        from dualpath.runtime.engines.decoder import DecoderConfig
        from dualpath.runtime.engines.kvcodec import KVCodec

        self.cluster, self.llm, self.block_tokens, self.seed = cluster, llm, block_tokens, seed
        self.max_context_tokens = max_context_tokens
        self.fields = decoder_fields(llm)
        self.config = DecoderConfig(**self.fields)
        self.layout = KVCodec.for_model(self.config, block_tokens).layout
        self.store_dir, self.secret = Path(store_dir), secret
        self.scheduler_host = scheduler_host  # where the engines' group leaders reach the scheduler
        self.handles: dict[str, EngineHandle] = {}
        self._client: ClusterClient | None = None  # once started
        self._store = BlockStore(self.store_dir, self.layout, scan=False)

    @property
    def client(self) -> ClusterClient:
        """The client the runtime drives its engines with (the scheduler's too)."""
        if self._client is None:
            raise DualpathError(f"{type(self).__name__}: not started (call start(), or use it as a context manager)")
        return self._client

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def dead(self) -> list[str]:
        """Engines known to be gone."""
        raise NotImplementedError

    def kill(self, name: str) -> None:
        raise NotImplementedError

    def respawn_dead(self) -> list[str]:
        raise NotImplementedError

    def lead(self, scheduler: tuple[str, int] | None) -> None:
        """Point every running engine's group leader at `scheduler` (None: stop fetching)."""
        dead = set(self.dead())
        for name, handle in self.handles.items():
            if name not in dead:  # one that does not answer gets no work: the scheduler sees no report from it
                with suppress(DualpathError):
                    self.client.channel(handle.address).call(Lead(scheduler), timeout_s=10)

    @contextmanager
    def scheduling(self, policy: Policy, **kwargs) -> Iterator[Scheduler]:
        """A started `Scheduler` of `policy` over these engines, their leaders fetching from it."""
        scheduler = Scheduler(list(self.handles.values()), policy, self.client, block_tokens=self.block_tokens,
                              hit_blocks=self.hit_blocks, secret=self.secret, host=self.scheduler_host,
                              **kwargs).start()
        try:
            self.lead(scheduler.address)
            yield scheduler
        finally:
            scheduler.close()
            self.lead(None)

    def clear_store(self) -> None:
        for child in self.store_dir.iterdir():
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)

    def hit_blocks(self, tokens: list[int]) -> int:
        """Leading Full Blocks of `tokens` in storage (at least one token is always computed)."""
        hit = 0
        for block_id in chain_block_ids(tokens, self.block_tokens)[: (len(tokens) - 1) // self.block_tokens]:
            if block_id not in self._store:
                break
            hit += 1
        return hit

    def reference_decoder(self):
        """The engines' model in this process (one torch thread, as each engine runs)."""
        from dualpath.errors import require
        from dualpath.runtime.engines.decoder import Decoder

        require("torch", "runtime").set_num_threads(1)
        return Decoder.from_seed(self.config, self.seed)

    def __enter__(self) -> Self:
        return self.start() if self._client is None else self

    def __exit__(self, *exc) -> None:
        self.close()
