"""LLM TOML files and profile tables: loading, calibration, and errors at their line."""

import dataclasses

import pytest

from dualpath.errors import InputError, SpecError
from dualpath.llm import AttentionKind, CostModel
from dualpath.models.llm_file import llm_from_text, load_llm
from dualpath.models.llms import llm_preset
from dualpath.models.profile import calibrate, load_profile
from tests.paths import EXAMPLES

MODELS = EXAMPLES / "models"


def test_example_model_without_preset():
    llm = load_llm(MODELS / "qwen2.5-72b.toml")
    assert llm.attention is AttentionKind.GQA
    assert llm.kv_bytes_per_token == 80 * 2 * 8 * 128 * 2  # = 327,680 B
    assert llm.gpus_per_engine == 4


def test_example_preset_with_other_hardware():
    llm = load_llm(MODELS / "ds-27b-h20.toml")
    base = llm_preset("ds-27b")
    assert llm.name == "ds-27b-h20"
    assert llm.cost.peak_tflops == 148.0 and llm.cost.prefill_mfu == base.cost.prefill_mfu
    assert llm.kv_bytes_per_token == base.kv_bytes_per_token


def test_bad_attention_kind():
    text = 'preset = "tiny"\nattention = "sparse"\n'
    with pytest.raises(SpecError) as info:
        llm_from_text(text, "m.toml")
    assert (info.value.line, info.value.field) == (2, "attention")
    assert '"mla"' in info.value.expected


def test_unknown_key_and_unknown_cost_key():
    with pytest.raises(SpecError) as info:
        llm_from_text('preset = "tiny"\nnum_layer = 3\n', "m.toml")
    assert (info.value.line, info.value.field) == (2, "num_layer")
    with pytest.raises(SpecError) as info:
        llm_from_text('preset = "tiny"\n\n[cost]\npeak_tflop = 3\n', "m.toml")
    assert (info.value.line, info.value.field) == (4, "cost.peak_tflop")


def test_validation_error_from_the_spec_points_at_the_key():
    with pytest.raises(SpecError) as info:
        llm_from_text('preset = "qwen2.5-7b"\nnum_kv_heads = 5\n', "m.toml")
    assert (info.value.line, info.value.field) == (2, "num_kv_heads")
    with pytest.raises(SpecError) as info:
        llm_from_text('preset = "tiny"\n[cost]\nprefill_mfu = 1.5\n', "m.toml")
    assert (info.value.line, info.value.field) == (3, "cost.prefill_mfu")


def test_missing_architecture_without_preset():
    with pytest.raises(SpecError) as info:
        llm_from_text('name = "x"\nnum_layers = 2\n', "m.toml")
    assert "required" in info.value.expected


def test_unknown_preset_lists_names():
    with pytest.raises(SpecError) as info:
        llm_from_text('preset = "gpt-5"\n', "m.toml")
    assert info.value.line == 1 and "deepseek-v3.2" in info.value.expected


def test_syntax_error():
    with pytest.raises(InputError) as info:
        llm_from_text('preset = "tiny"\nnum_layers = 4 4\n', "m.toml")
    assert info.value.line == 2


def _synthetic_rows(llm, mfu, overhead_s):
    """Rows a GPU at `mfu` with `overhead_s` per batch would produce (exact, so the fit must recover it)."""
    rate = llm.cost.peak_tflops * 1e12 * mfu
    shapes = [(0, 512), (0, 2048), (8192, 512), (32768, 1024), (60000, 256)]
    return [(c, n, overhead_s + llm.prefill_flops(c, n) / rate) for c, n in shapes]


def test_profile_csv_calibrates_the_cost_model(tmp_path):
    llm = llm_preset("qwen2.5-7b")
    rows = _synthetic_rows(llm, 0.31, 0.012)
    path = tmp_path / "profile.csv"
    path.write_text("# measured on a test rig\ncached_tokens,new_tokens,seconds\n"
                    + "".join(f"{c},{n},{s!r}\n" for c, n, s in rows))
    fitted = calibrate(llm, load_profile(path))
    assert fitted.cost.prefill_mfu == pytest.approx(0.31, rel=1e-6)
    assert fitted.cost.prefill_overhead_s == pytest.approx(0.012, rel=1e-6)
    assert fitted.prefill_time_s([(8192, 512)]) == pytest.approx(rows[2][2], rel=1e-6)


def test_model_file_with_profile_table(tmp_path):
    llm = llm_preset("tiny")
    rows = _synthetic_rows(llm, 0.05, 0.003)
    (tmp_path / "p.toml").write_text("".join(f"[[row]]\ncached_tokens = {c}\nnew_tokens = {n}\nseconds = {s!r}\n\n"
                                             for c, n, s in rows))
    (tmp_path / "m.toml").write_text('preset = "tiny"\nprofile = "p.toml"\n')
    fitted = load_llm(tmp_path / "m.toml")
    assert fitted.cost.prefill_mfu == pytest.approx(0.05, rel=1e-6)
    assert "prefill_mfu" in fitted.cost_pinned  # a fitted cost is the model's own: simulate keeps it
    assert dataclasses.replace(fitted, cost=CostModel(), cost_pinned=()) == dataclasses.replace(
        llm, name="m", cost=CostModel())


def test_missing_profile_file_names_the_key(tmp_path):
    (tmp_path / "m.toml").write_text('preset = "tiny"\n\nprofile = "nope.csv"\n')
    with pytest.raises(SpecError) as info:
        load_llm(tmp_path / "m.toml")
    assert (info.value.line, info.value.field) == (3, "profile")


@pytest.mark.parametrize("text,line,field", [
    ("cached_tokens,new_tokens,seconds\n0,512,0.1\n0,-3,0.2\n", 3, "new_tokens"),
    ("cached_tokens,new_tokens,seconds\n0,512,zero\n", 2, "seconds"),
])
def test_bad_profile_rows(tmp_path, text, line, field):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_profile(path)
    assert (info.value.line, info.value.field) == (line, field)


def test_bad_profile_shape(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("cached,new,seconds\n0,1,1\n")
    with pytest.raises(InputError) as info:
        load_profile(path)
    assert info.value.line == 1
    path.write_text("cached_tokens,new_tokens,seconds\n0,1\n")
    with pytest.raises(InputError) as info:
        load_profile(path)
    assert info.value.line == 2


def test_bad_toml_profile_row_line(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[[row]]\ncached_tokens = 0\nnew_tokens = 5\nseconds = 0.1\n\n[[row]]\ncached_tokens = 0\n"
                    "new_tokens = 5\nsecs = 0.1\n")
    with pytest.raises(SpecError) as info:
        load_profile(path)
    assert (info.value.line, info.value.field) == (6, "row[1].secs")


def test_profile_that_cannot_fit(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("cached_tokens,new_tokens,seconds\n0,512,0.1\n")
    with pytest.raises(SpecError):
        calibrate(llm_preset("tiny"), load_profile(path))
