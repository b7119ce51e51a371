"""Hugging Face config.json files: the covered architectures give the presets' KV bytes and parameters."""

import dataclasses
import json

import pytest

from dualpath.cli import main
from dualpath.errors import InputError, SpecError
from dualpath.llm import AttentionKind
from dualpath.models.hf_config import load_hf_config
from dualpath.models.llm_file import llm_from_text
from dualpath.models.llms import dense_params, llm_preset
from dualpath.models.registry import resolve_model
from tests.paths import EXAMPLES

HF = EXAMPLES / "models" / "hf"  # written from the published config.json of each model


@pytest.mark.parametrize("folder,preset", [
    ("llama-3.1-8b", "llama-3.1-8b"), ("qwen2.5-32b", "qwen2.5-32b"), ("deepseek-v3.2", "deepseek-v3.2"),
])
def test_config_gives_the_preset(folder, preset):
    llm, base = resolve_model(str(HF / folder / "config.json")), llm_preset(preset)
    assert llm.kv_bytes_per_token == base.kv_bytes_per_token
    # Everything but the name and the context: Qwen2.5's config says 32K, the preset assumes YaRN's 128K.
    assert dataclasses.replace(llm, name=base.name, max_context_tokens=base.max_context_tokens) == base


@pytest.mark.parametrize("folder,preset,kv_bytes", [
    ("llama-3.1-8b", "llama-3.1-8b", 131_072), ("qwen2.5-32b", "qwen2.5-32b", 262_144),
    ("deepseek-v3.2", "deepseek-v3.2", 48_068),
])
def test_info_prints_the_presets_kv_bytes(capsys, folder, preset, kv_bytes):
    outputs = []
    for model in (str(HF / folder / "config.json"), str(HF / folder), preset):
        assert main(["info", "--model", model]) == 0
        out = capsys.readouterr().out
        outputs.append([line for line in out.splitlines() if line.startswith("KV bytes")])
    assert outputs[0] == outputs[1] == outputs[2]
    assert f"{kv_bytes:,} B" in "\n".join(outputs[0])


def test_models_without_a_preset():
    v3 = load_hf_config(HF / "deepseek-v3")
    assert v3.attention is AttentionKind.MLA and v3.indexer_bytes_per_token_per_layer == 0
    assert v3.kv_bytes_per_token_per_layer == 2 * (512 + 64)  # bf16 latent + RoPE key, no FP8 layout
    assert v3.total_params == pytest.approx(671.0e9, rel=1e-3) and v3.max_context_tokens == 163_840
    big = load_hf_config(HF / "llama-3.1-70b" / "config.json")
    assert big.name == "llama-3.1-70b" and big.kv_bytes_per_token == 80 * 2 * 8 * 128 * 2
    assert (big.total_params, big.active_params) == dense_params(
        num_layers=80, hidden=8192, num_heads=64, num_kv_heads=8, head_dim=128, intermediate=28672, vocab=128256)


def test_model_toml_over_an_hf_config(tmp_path):
    (tmp_path / "m.toml").write_text(f'hf_config = "{HF / "deepseek-v3"}"\nkv_dtype_bytes = 1\n')
    llm = resolve_model(str(tmp_path / "m.toml"))
    assert llm.name == "m" and llm.attention_kv_bytes_per_token_per_layer == 656
    with pytest.raises(SpecError) as info:
        llm_from_text('preset = "tiny"\nhf_config = "x.json"\n', "m.toml")
    assert (info.value.line, info.value.field) == (2, "hf_config")


def test_a_json_file_under_any_name_is_not_read_as_toml(tmp_path):
    path = tmp_path / "model.cfg"
    path.write_text((HF / "qwen2.5-32b" / "config.json").read_text())
    assert resolve_model(str(path)).kv_bytes_per_token == 262_144


@pytest.mark.parametrize("change,field", [
    ({"model_type": "mistral"}, "model_type"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"num_key_value_heads": 7}, "num_key_value_heads"),
    ({"torch_dtype": "int4"}, "torch_dtype"),
    ({"hidden_size": None}, "hidden_size"),
    ({"num_hidden_layers": 10**12}, "num_hidden_layers"),  # issue 18: bounded, not a 10^12-layer model
    ({"rope_scaling": {"rope_type": "yarn", "factor": 1e308, "original_max_position_embeddings": 4096}},
     "rope_scaling"),  # int(inf) would be an OverflowError traceback
])
def test_errors_name_file_line_and_key(tmp_path, change, field):
    config = json.loads((HF / "qwen2.5-32b" / "config.json").read_text())
    config.update(change)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config, indent=2))
    with pytest.raises(SpecError) as info:
        resolve_model(str(path))
    assert info.value.field == field and info.value.source == str(path)
    assert path.read_text().splitlines()[info.value.line - 1].strip().startswith(f'"{field}"')


def test_broken_json_names_its_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "llama",\n  "hidden_size": 4096,,\n}\n')
    with pytest.raises(InputError) as info:
        resolve_model(str(path))
    assert info.value.line == 3


def test_spec_bounds_past_the_readers_name_the_file(tmp_path):
    config = json.loads((HF / "qwen2.5-32b" / "config.json").read_text())
    config["num_hidden_layers"] = 100_000  # under the reader's token bound, over LLMSpec's MAX_LAYERS
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(SpecError, match=r"num_layers = 100000: .*MAX_LAYERS") as info:
        resolve_model(str(path))
    assert info.value.source == str(path)
