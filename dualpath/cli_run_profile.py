"""What the simulator needs to know about this machine's engines, measured (`dualpath run --predict`).

`profile_engines` times fresh prefills, decode steps and prefills on cached blocks over both read
paths, and fits the simulator's cost model and per-Layer-Block submit cost to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dualpath.llm import CostModel


@dataclass(frozen=True)
class EngineProfile:
    """What the simulator needs to know about this machine's engines (see `profile_engines`)."""

    cost: CostModel  # the model's, fitted to the engines
    rdma_submit_s: float  # per Layer Block moved in or out of a PE: the fixed cost beyond the bytes
    interval_s: float = 0.05  # the scheduler's tick
    rows: list = field(default_factory=list)  # (kind, tokens or hit blocks, path, seconds) measured

    def calibration(self):
        """The simulator's constants for the emulated cluster: NICs at their line rate (the runtime's
        limiters are exact), the profiled cost, per-block cost and scheduler tick."""
        from dualpath.calibration import Calibration

        return Calibration(cost_model=None, snic_read_efficiency=1.0, snic_write_efficiency=1.0,
                           weight_bytes_per_param=4.0, rdma_submit_s=self.rdma_submit_s,
                           cuda_copy_submit_s=self.rdma_submit_s, schedule_interval_s=self.interval_s,
                           de_load_submit_s=0.0)  # a DE gathers a request's blocks in one copy

    def describe(self, llm) -> str:
        c = self.cost
        step_ms = 2 * llm.active_params / (c.peak_tflops * 1e12 * c.decode_mfu) * 1e3
        return (f"engine profile: prefill {c.prefill_overhead_s * 1e3:.1f} ms + FLOPs at {c.prefill_mfu:.3g} x "
                f"{c.peak_tflops:g} TFLOPS, decode step {c.decode_overhead_s * 1e3:.2f} ms + {step_ms:.2f} ms per "
                f"sequence, {self.rdma_submit_s * 1e6:.0f} us per layer block moved")


def profile_engines(runtime, llm, *, sizes=(16, 64, 128, 256, 384), hit_blocks=None, new_tokens: int = 32,
                    decode_tokens: int = 8, decode_batch: int = 4, repeats: int = 3,
                    interval_s: float = 0.05) -> EngineProfile:
    """Measure this machine's engines once and fit the simulator's constants to them.

    Fresh prompts of `sizes` tokens give prefill seconds per FLOP and per batch (`CostModel.fit`);
    decode steps alone and `decode_batch` together give a step's fixed and per-sequence seconds; prompts of `new_tokens`
    on `hit_blocks` cached blocks, on both read paths, give the per-Layer-Block cost of moving KV in
    and out of a PE, fitted to the simulator's layerwise step. Each point is the median of `repeats`
    runs. Storage is emptied afterwards."""
    from dualpath.cluster import Role
    from dualpath.errors import SpecError
    from dualpath.llm import CostModel
    from dualpath.runtime.scheduling.agents import append_tokens

    room = runtime.max_context_tokens - decode_tokens
    sizes = [n for n in sizes if n <= room]
    if hit_blocks is None:  # 30%, 60% and 90% of the room: the per-block cost is a slope, fit across it
        room_blocks = (room - 3 - new_tokens) // runtime.block_tokens
        hit_blocks = sorted({max(1, room_blocks * tenths // 10) for tenths in (3, 6, 9)})
    hit_blocks = [h for h in hit_blocks if h * runtime.block_tokens + 3 + new_tokens <= room]
    if len(sizes) < 2 or not hit_blocks:
        raise SpecError("profile", "max_context_tokens", runtime.max_context_tokens,
                        "room for the profile's prompts (sizes and hits) in the engines' context")
    pe = next(h for h in runtime.handles.values() if h.role is Role.PREFILL)
    de = next(h for h in runtime.handles.values() if h.role is Role.DECODE)
    vocab, bt, rows = runtime.config.vocab_size, runtime.block_tokens, []

    def submit(tokens, path="pe", new=decode_tokens):
        return runtime.client.submit(pe.address, de.address, tokens, new, path=path)

    fresh, steps = [], []
    for n in sizes:
        runs = [submit(append_tokens(runtime.seed + 101 * rep, n, rep, n, vocab)) for rep in range(repeats + 1)][1:]
        seconds = _median([r.times["first_token"] - r.times["prefill_start"] for r in runs])  # first: warm-up
        fresh.append((llm.prefill_flops(0, n), seconds))
        steps += [(r.times["finish"] - r.times["second_token"]) / (decode_tokens - 2) for r in runs]
        rows.append(("fresh", n, "pe", seconds))
    cost = CostModel.fit(fresh, llm.cost)
    # A DE's step runs every sequence at once: t(b) = fixed + b x per_sequence, from b = 1 and b = 4
    # (memory never binding on these engines).
    step_1 = _median(steps)
    step_k = _median(_batched_steps(submit, runtime.seed, vocab, decode_batch, 2 * decode_tokens))
    per_sequence_s = max((step_k - step_1) / (decode_batch - 1), step_1 / 100)
    cost = replace(cost, decode_mfu=min(1.0, 2.0 * llm.active_params / (cost.peak_tflops * 1e12 * per_sequence_s)),
                   decode_overhead_s=max(0.0, step_1 - per_sequence_s), hbm_gb_per_s=1e6, hbm_efficiency=1.0)
    rows += [("decode step", 1, "de", step_1), ("decode step", decode_batch, "de", step_k)]
    hits = []
    for path in ("pe", "de"):
        for h in hit_blocks:
            times, hit, new = [], 0, 0
            for rep in range(repeats):
                base = append_tokens(runtime.seed + 7 + rep, h, path == "de", h * bt + 1, vocab)
                first = submit(base, new=2)  # stores h blocks
                r = submit(base + first.tokens + append_tokens(runtime.seed + 8, h, rep, new_tokens, vocab), path)
                times.append(r.times["first_token"] - r.times["prefill_start"])
                hit, new = r.hit_tokens // bt, len(base) + 2 + new_tokens - r.hit_tokens
            hits.append((hit, new, path, _median(times)))
            rows.append(("hit", hit, path, _median(times)))
    runtime.clear_store()
    fitted = replace(llm, cost=cost)
    submit_s = _fit_submit(fitted, runtime.cluster.node, bt, hits)
    return EngineProfile(cost, submit_s, interval_s, rows)


def _batched_steps(submit, seed: int, vocab: int, batch: int, new_tokens: int) -> list[float]:
    """Decode step times of `batch` requests sent together (their prefills batch, their decodes overlap)."""
    from concurrent.futures import ThreadPoolExecutor

    from dualpath.runtime.scheduling.agents import append_tokens

    prompts = [append_tokens(seed + 211, i, 0, 48, vocab) for i in range(batch)]
    with ThreadPoolExecutor(batch) as pool:
        runs = list(pool.map(lambda tokens: submit(tokens, new=new_tokens), prompts))
    return [(r.times["finish"] - r.times["second_token"]) / (new_tokens - 2) for r in runs]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _fit_submit(llm, node, block_tokens: int, hits: list) -> float:
    """The per-Layer-Block cost that makes the simulator's layerwise step (load, compute, send in a
    pipeline over the layers) match the measured prefills with hits, by least squares on a grid."""
    layers, kv = llm.num_layers, llm.kv_bytes_per_token
    cnic = node.cnic_bytes_per_s * node.cnic_kv_share

    def step(submit_s: float, hit: int, new: int, path: str) -> float:
        c = llm.prefill_time_s([(hit * block_tokens, new)]) / layers
        t = max(hit * block_tokens * kv / cnic, hit * layers * submit_s) / layers
        out_blocks = -(-new // block_tokens) + (hit if path == "pe" else 0)
        out_bytes = new * kv + (hit * block_tokens * kv if path == "pe" else 0)
        o = max(out_bytes / cnic, out_blocks * layers * submit_s) / layers
        return t + c + o + (layers - 1) * max(t, c, o)

    grid = [0.0] + [1e-7 * 1.05**i for i in range(260)]  # 0.1 us .. 30 ms
    return min(grid, key=lambda s: sum((step(s, h, n, p) - sec) ** 2 for h, n, p, sec in hits))
