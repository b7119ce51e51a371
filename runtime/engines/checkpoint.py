"""Local Hugging Face checkpoints: the safetensors format and `config.json`, read and written.

The `safetensors` package is not a dependency; the format is small enough to implement: an 8-byte
little-endian header length, a JSON header mapping each tensor name to dtype, shape and byte offsets
into the data section, then the raw little-endian bytes. Llama and Qwen2 directories are supported
(one `model.safetensors` or shards listed in `model.safetensors.index.json`).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from dualpath.errors import InputError, SpecError, require
from dualpath.runtime.engines.decoder import Decoder, DecoderConfig, weight_shapes

_DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}
_MODEL_TYPES = ("llama", "qwen2")
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (name -> torch tensor) as one safetensors file, atomically."""
    torch = require("torch", "runtime")
    by_torch = {getattr(torch, v): k for k, v in _DTYPE_NAMES.items()}
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    blobs, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        if tensor.dtype not in by_torch:
            raise SpecError(str(path), name, str(tensor.dtype), "a dtype safetensors knows")
        data = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": by_torch[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned, as the reference writer does
    tmp = Path(f"{path}.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for data in blobs:
            f.write(data)
    os.replace(tmp, path)


def read_safetensors(path: str | os.PathLike) -> dict:
    """Read every tensor of a safetensors file into CPU tensors; bad files raise `InputError`."""
    torch = require("torch", "runtime")
    source = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise InputError(source, "truncated: no 8-byte header length")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > _MAX_HEADER_BYTES:
                raise InputError(source, f"header length {header_len} is not plausible")
            try:
                header = json.loads(f.read(header_len))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(source, f"header is not JSON: {exc}") from exc
            data = f.read()
    except OSError as exc:
        raise InputError(source, f"cannot read: {exc.strerror}") from exc
    if not isinstance(header, dict):
        raise InputError(source, "header is not a JSON object")
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = getattr(torch, _DTYPE_NAMES[entry["dtype"]])
            shape = [int(n) for n in entry["shape"]]
            begin, end = (int(n) for n in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(source, f"tensor {name}: bad header entry {entry!r}") from exc
        if not 0 <= begin <= end <= len(data):
            raise InputError(source, f"tensor {name}: data_offsets {begin}..{end} outside {len(data)} bytes")
        flat = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.uint8) if end > begin \
            else torch.empty(0, dtype=torch.uint8)
        numel = 1
        for n in shape:
            numel *= n
        if flat.numel() != numel * dtype.itemsize:
            raise InputError(source, f"tensor {name}: {end - begin} bytes do not hold shape {shape} {dtype}")
        tensors[name] = flat.view(dtype).reshape(shape)
    return tensors


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
