"""Hugging Face `config.json` files as LLM specs: `--model path/to/config.json` or a checkpoint folder.

Covered architectures (`model_type`): `llama` and `qwen2` (GQA decoders), `deepseek_v3` (MLA + MoE) and
`deepseek_v32` (V3 plus the DeepSeek sparse-attention indexer: `index_n_heads`, `index_head_dim`,
`index_topk`). Parameter counts come from the same formulas as the presets (`dualpath.models.llms`),
so a published config gives exactly the preset's numbers, KV bytes per token included.

KV cache dtype: config.json does not name it. Dense models cache in `torch_dtype` (bf16/fp16: 2 bytes,
fp32: 4), which is what vLLM's and SGLang's default `kv_cache_dtype=auto` does. DeepSeek-V3.2 caches
FP8 in FlashMLA's layout (656 B per token per layer + 132 B of indexer keys), as its inference code
and the paper do; DeepSeek-V3 without the indexer caches the bf16 latent (2 x (512 + 64) = 1,152 B).
Another dtype: an LLM TOML with `hf_config = "config.json"` and `kv_dtype_bytes = 1`.

Context length: `max_position_embeddings`, or the YaRN-extended length (`rope_scaling.factor` x
`original_max_position_embeddings`) when that is longer.

Errors name the file, the line of the key, the value and what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path

from dualpath.errors import InputError, SpecError
from dualpath.jsonio import parse_json
from dualpath.limits import MAX_TOKENS
from dualpath.llm import AttentionKind, LLMSpec
from dualpath.models.llms import dense_params, mla_moe_params
from dualpath.validate import read_text

DENSE_TYPES = ("llama", "qwen2")
DEEPSEEK_TYPES = ("deepseek_v3", "deepseek_v32")
MODEL_TYPES = DENSE_TYPES + DEEPSEEK_TYPES
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "half": 2, "float": 4}


def is_hf_config_ref(text: str) -> bool:
    """A `.json` path, a folder holding `config.json`, or a file whose first character is `{`."""
    path = Path(text)
    if text.lower().endswith(".json") or (path.is_dir() and (path / "config.json").is_file()):
        return True
    if not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(4096).lstrip().startswith("{")
    except OSError:
        return False


def load_hf_config(path: str | Path, name: str | None = None) -> LLMSpec:
    """The LLMSpec of a config.json (or of the folder that holds one); `name` defaults to the folder's."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    source = str(path)
    text = read_text(path)
    data = parse_json(source, text)
    if not isinstance(data, dict):
        raise InputError(source, f"expected a JSON object, found {type(data).__name__}")
    default = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    return hf_config_to_llm(data, source, text, name or default.lower())


def hf_config_to_llm(hf: dict, source: str = "config.json", text: str = "", name: str = "hf-model") -> LLMSpec:
    cfg = _Fields(hf, source, text)
    try:
        return _to_llm(cfg, name)
    except SpecError as exc:
        if exc.source == source:
            raise
        # LLMSpec's own bounds (a layer count past MAX_LAYERS, a derived parameter count): name the file.
        raise SpecError(source, exc.field, exc.value, exc.expected) from exc


def _to_llm(cfg: _Fields, name: str) -> LLMSpec:
    model_type = cfg.choice("model_type", MODEL_TYPES)
    heads = cfg.integer("num_attention_heads")
    common = {"num_layers": cfg.integer("num_hidden_layers"), "hidden": cfg.integer("hidden_size"),
              "vocab": cfg.integer("vocab_size")}
    context = cfg.context_tokens()
    if model_type in DENSE_TYPES:
        kv_heads = cfg.integer("num_key_value_heads", heads)
        head_dim = cfg.integer("head_dim", common["hidden"] // heads)
        # Qwen2's q/k/v projections always carry biases; Llama's only with attention_bias.
        bias = model_type == "qwen2" or cfg.flag("attention_bias", False)
        total, active = dense_params(num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                                     intermediate=cfg.integer("intermediate_size"), qkv_bias=bias,
                                     tied_embeddings=cfg.flag("tie_word_embeddings", False), **common)
        if heads % kv_heads:
            raise cfg.error("num_key_value_heads", kv_heads, f"a divisor of num_attention_heads {heads}")
        kind = AttentionKind.MHA if kv_heads == heads else AttentionKind.GQA
        return LLMSpec(name=name, num_layers=common["num_layers"], hidden_size=common["hidden"], num_heads=heads,
                       attention=kind, head_dim=head_dim, num_kv_heads=kv_heads, kv_dtype_bytes=cfg.dtype_bytes(),
                       total_params=float(total), active_params=float(active), vocab_size=common["vocab"],
                       max_context_tokens=context)
    mla = {"q_lora_rank": cfg.integer("q_lora_rank"), "kv_lora_rank": cfg.integer("kv_lora_rank"),
           "qk_nope_dim": cfg.integer("qk_nope_head_dim"), "qk_rope_dim": cfg.integer("qk_rope_head_dim"),
           "v_head_dim": cfg.integer("v_head_dim")}
    indexed = model_type == "deepseek_v32"
    indexer = ({"indexer_heads": cfg.integer("index_n_heads"), "indexer_dim": cfg.integer("index_head_dim")}
               if indexed else {})
    num_dense_layers = cfg.integer("first_k_dense_replace", 0, minimum=0)
    total, active = mla_moe_params(
        num_heads=heads, **common, **mla, num_dense_layers=num_dense_layers,
        dense_intermediate=cfg.integer("intermediate_size"), moe_intermediate=cfg.integer("moe_intermediate_size"),
        num_routed=cfg.integer("n_routed_experts"), num_shared=cfg.integer("n_shared_experts", 0, minimum=0),
        num_active=cfg.integer("num_experts_per_tok"), **indexer)
    return LLMSpec(name=name, num_layers=common["num_layers"], hidden_size=common["hidden"], num_heads=heads,
                   attention=AttentionKind.MLA, head_dim=mla["qk_nope_dim"] + mla["qk_rope_dim"],
                   kv_lora_rank=mla["kv_lora_rank"], qk_rope_head_dim=mla["qk_rope_dim"],
                   kv_dtype_bytes=1 if indexed else cfg.dtype_bytes(),
                   index_topk_tokens=cfg.integer("index_topk") if indexed else 0,
                   indexer_heads=indexer.get("indexer_heads", 0), indexer_head_dim=indexer.get("indexer_dim", 0),
                   total_params=float(total), active_params=float(active), vocab_size=common["vocab"],
                   max_context_tokens=context, num_moe_layers=common["num_layers"] - num_dense_layers,
                   experts_per_token=cfg.integer("num_experts_per_tok"))


class _Fields:
    """Typed reads of config.json keys; errors point at the key's line in the file text."""

    def __init__(self, hf: dict, source: str, text: str):
        self.hf, self.source, self.text = hf, source, text

    def error(self, key: str, value: object, expected: str) -> SpecError:
        match = re.search(rf'"{re.escape(key)}"\s*:', self.text)
        line = self.text.count("\n", 0, match.start()) + 1 if match else None
        return SpecError(self.source, key, value, expected, line)

    def integer(self, key: str, default: int | None = None, minimum: int = 1, maximum: int = MAX_TOKENS) -> int:
        value = self.hf.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            what = f"an integer in {minimum:,}..{maximum:,}" + (
                "" if key in self.hf or default is not None else " (required)")
            raise self.error(key, value, what)
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.hf.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, value, "true or false")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.hf.get(key)
        if value not in choices:
            raise self.error(key, value, "one of " + ", ".join(choices) + " (the architectures the presets cover)")
        return str(value)

    def dtype_bytes(self) -> int:
        value = self.hf.get("torch_dtype", self.hf.get("dtype", "bfloat16"))
        if value not in _DTYPE_BYTES:
            raise self.error("torch_dtype", value, "one of " + ", ".join(_DTYPE_BYTES))
        return _DTYPE_BYTES[value]

    def context_tokens(self) -> int:
        longest = self.integer("max_position_embeddings", 131072)
        scaling = self.hf.get("rope_scaling")
        if scaling is None:
            return longest
        if not isinstance(scaling, dict):
            raise self.error("rope_scaling", scaling, "null or a table")
        factor, original = scaling.get("factor"), scaling.get("original_max_position_embeddings")
        kind = scaling.get("rope_type", scaling.get("type"))
        # YaRN stretches the trained window by `factor`; Llama 3's scaling is already in max_position_embeddings.
        if (kind == "yarn" and isinstance(factor, (int, float)) and not isinstance(factor, bool)
                and isinstance(original, int) and factor > 0):
            stretched = factor * original
            if not stretched <= MAX_TOKENS:  # NaN, inf and 1e308 included
                raise self.error("rope_scaling", scaling, f"a YaRN factor x original_max_position_embeddings "
                                                          f"of at most {MAX_TOKENS:,} tokens")
            return max(longest, int(stretched))
        return longest
