"""Local Hugging Face checkpoints: safetensors weights (through the `safetensors` package, part of the
`runtime` extra) and `config.json`, read and written. Llama and Qwen2 directories are supported (one
`model.safetensors` or shards listed in `model.safetensors.index.json`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dualpath.errors import InputError, SpecError, require
from dualpath.runtime.engines.decoder import Decoder, DecoderConfig, weight_shapes

_MODEL_TYPES = ("llama", "qwen2")


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (name -> torch tensor) as one safetensors file, atomically."""
    save_file = require("safetensors.torch", "runtime").save_file
    out = Path(path)
    seen: set[int] = set()
    cpu: dict[str, object] = {}
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        # safetensors refuses tensors sharing a storage (tied embeddings, or views of one buffer at other
        # offsets): every tensor after the first on a storage gets its own copy
        storage = tensor.untyped_storage().data_ptr()
        cpu[name] = tensor.clone() if tensor.numel() and storage in seen else tensor
        seen.add(storage)
    tmp = out.with_name(f".{out.name}.tmp")  # beside the target: a crash never leaves half a checkpoint
    try:
        save_file(cpu, tmp, metadata=dict(metadata or {}))
        os.replace(tmp, out)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(str(path), f"cannot write: {exc.strerror}") from exc
        raise SpecError(str(path), "tensors", type(exc).__name__, f"tensors safetensors can store ({exc})") from exc


def read_safetensors(path: str | os.PathLike) -> dict:
    """Read every tensor of a safetensors file into CPU tensors; bad files raise `InputError`."""
    safetensors = require("safetensors", "runtime")
    load_file = require("safetensors.torch", "runtime").load_file
    try:
        return dict(load_file(path, device="cpu"))
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    except (safetensors.SafetensorError, ValueError) as exc:
        raise InputError(str(path), f"not a valid safetensors file: {exc}") from exc


def config_from_hf(hf: dict, source: str = "config.json", dtype: str = "float32") -> DecoderConfig:
    """Translate a Llama/Qwen2 `config.json` into a `DecoderConfig` computing in `dtype`."""
    model_type = hf.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise SpecError(source, "model_type", model_type, "one of " + ", ".join(_MODEL_TYPES))
    if hf.get("rope_scaling"):
        raise SpecError(source, "rope_scaling", hf["rope_scaling"], "null (scaled RoPE is not supported)")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        if key not in hf:
            raise SpecError(source, key, None, "present")
    heads = hf["num_attention_heads"]
    default_bias = model_type == "qwen2"
    return DecoderConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
        num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rope_theta=float(hf.get("rope_theta", 10000.0)), rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        attention_bias=bool(hf.get("attention_bias", default_bias)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)), dtype=dtype,
    )


def config_to_hf(config: DecoderConfig, model_type: str = "llama") -> dict:
    if model_type not in _MODEL_TYPES:
        raise SpecError("config_to_hf", "model_type", model_type, "one of " + ", ".join(_MODEL_TYPES))
    hf = {
        "model_type": model_type, "architectures": ["LlamaForCausalLM" if model_type == "llama"
                                                    else "Qwen2ForCausalLM"],
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim, "rope_theta": config.rope_theta, "rms_norm_eps": config.rms_norm_eps,
        "tie_word_embeddings": config.tie_word_embeddings, "torch_dtype": config.dtype,
        "hidden_act": "silu", "rope_scaling": None,
    }
    if model_type == "llama":
        hf["attention_bias"] = config.attention_bias
    elif not config.attention_bias:
        raise SpecError("config_to_hf", "attention_bias", False, "True for qwen2 (its q/k/v have biases)")
    return hf


def save_checkpoint(directory: str | os.PathLike, config: DecoderConfig, weights: dict,
                    model_type: str = "llama") -> Path:
    """Write `config.json` and `model.safetensors` (HF names) into `directory`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config_to_hf(config, model_type), indent=2) + "\n")
    names = weight_shapes(config)
    write_safetensors(out / "model.safetensors", {n: weights[n] for n in names}, {"format": "pt"})
    return out


def load_checkpoint(directory: str | os.PathLike, device: str = "cpu", dtype: str = "float32") -> Decoder:
    """Build a `Decoder` from a local checkpoint directory (config.json + safetensors shards)."""
    root = Path(directory)
    config_path = root / "config.json"
    try:
        hf = json.loads(config_path.read_text())
    except OSError as exc:
        raise InputError(str(config_path), f"cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(str(config_path), f"not JSON: {exc.msg}", line=exc.lineno) from exc
    config = config_from_hf(hf, str(config_path), dtype)
    index_path = root / "model.safetensors.index.json"
    if index_path.exists():
        weight_map = json.loads(index_path.read_text()).get("weight_map", {})
        shards = sorted(set(weight_map.values()))
    else:
        shards = sorted(p.name for p in root.glob("*.safetensors"))
    if not shards:
        raise InputError(str(root), "no *.safetensors file")
    weights = {}
    for shard in shards:
        weights.update(read_safetensors(root / shard))
    # HF checkpoints omit lm_head when tied; some tied ones still carry it, which is harmless.
    return Decoder(config, weights, device)
