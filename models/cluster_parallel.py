"""vLLM and SGLang parallel sizes in cluster files: `[prefill]` and `[decode]` tables for the group sizes.

    [prefill]                          # SGLang names (DP attention + expert parallel, DeepSeek's way)
    tp_size = 16
    dp_size = 16
    enable_dp_attention = true
    ep_size = 16

    [decode]                           # or vLLM names
    tensor_parallel_size = 1
    data_parallel_size = 32
    enable_expert_parallel = true

Our engines are single GPUs (the paper's: data-parallel attention, one engine per GPU) grouped into
PE/DE groups that share one copy of the experts. So an instance's GPUs are the group size
(`pe_group_gpus` / `de_group_gpus`): vLLM's tensor_parallel_size x data_parallel_size, SGLang's tp_size
(its dp_size splits those GPUs for attention). The GPUs one attention engine spans must be 1 (vLLM:
tensor_parallel_size; SGLang: tp_size / dp_size with DP attention, else tp_size): a tensor-parallel
engine is `gpus_per_engine` in the model file. An expert-parallel size, when given, must be the
instance's GPUs, since experts shard over the whole group.
"""

from __future__ import annotations

from dualpath.limits import MAX_GROUP_GPUS
from dualpath.tomldoc import TomlDoc

VLLM_KEYS = ("tensor_parallel_size", "data_parallel_size", "enable_expert_parallel")
SGLANG_KEYS = ("tp_size", "dp_size", "ep_size", "enable_dp_attention")
ROLE_TABLES = {"prefill": "pe_group_gpus", "decode": "de_group_gpus"}


def group_sizes(doc: TomlDoc) -> dict[str, int]:
    """`pe_group_gpus` / `de_group_gpus` from the `[prefill]` / `[decode]` tables present."""
    out = {}
    for role, field in ROLE_TABLES.items():
        table = doc.table(role)
        if table:
            out[field] = _instance_gpus(doc, role, table)
    return out


def _int(doc: TomlDoc, role: str, table: dict, key: str, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_GROUP_GPUS:
        raise doc.error((role, key), value,
                        f"a positive integer <= {MAX_GROUP_GPUS:,} (dualpath.limits.MAX_GROUP_GPUS)")
    return value


def _flag(doc: TomlDoc, role: str, table: dict, key: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise doc.error((role, key), value, "true or false")
    return value


def _instance_gpus(doc: TomlDoc, role: str, table: dict) -> int:
    doc.check_keys(table, set(VLLM_KEYS) | set(SGLANG_KEYS), (role,))
    vllm = [k for k in VLLM_KEYS if k in table]
    sglang = [k for k in SGLANG_KEYS if k in table]
    if vllm and sglang:
        raise doc.error((role, sglang[0]), table[sglang[0]], f"vLLM names or SGLang names, not both (also {vllm[0]})")
    if vllm:
        tp = _int(doc, role, table, "tensor_parallel_size", 1)
        gpus = tp * _int(doc, role, table, "data_parallel_size", 1)
        _flag(doc, role, table, "enable_expert_parallel")
        engine_key, engine_gpus = "tensor_parallel_size", tp
    else:
        gpus = _int(doc, role, table, "tp_size", 1)
        dp = _int(doc, role, table, "dp_size", 1)
        dp_attention = _flag(doc, role, table, "enable_dp_attention")
        if gpus % dp:
            raise doc.error((role, "dp_size"), dp, f"a divisor of tp_size {gpus}")
        engine_key, engine_gpus = "tp_size", gpus // dp if dp_attention else gpus
        if "ep_size" in table and _int(doc, role, table, "ep_size", gpus) != gpus:
            raise doc.error((role, "ep_size"), table["ep_size"], f"tp_size {gpus} (experts shard over the group)")
    if engine_gpus != 1:
        raise doc.error((role, engine_key), table.get(engine_key), "one GPU per attention engine (data-parallel "
                        "attention; a tensor-parallel engine is gpus_per_engine in the model file)")
    return gpus
