"""LLM TOML files: a model the presets do not cover, or a preset with other numbers.

    preset = "qwen2.5-32b"         # optional: start from a preset (dualpath.models.llms)
    hf_config = "hf/config.json"   # or from a Hugging Face config.json (relative to this file; a folder works)
    name = "qwen2.5-32b-h20"       # optional; default: the file's stem
    num_layers = 64                # any LLMSpec field; without a preset the architecture is required
    attention = "gqa"              # "mha", "gqa" or "mla"
    kv_dtype_bytes = 2
    profile = "h20-prefill.csv"    # optional profile table (relative to this file) fitting the cost model

    [cost]                         # optional CostModel fields
    peak_tflops = 148.0

The keys of a [cost] table, and the fields a profile fits, are pinned: `simulate` runs its calibrated
cost model with those fields replaced by the file's (`dualpath.calibration.Calibration.apply`), so an
H20 file's `peak_tflops` slows the simulation as it slows `plan`; the file's values always win.

Errors name the file, the line of the key, the value and what was expected.
"""

from __future__ import annotations

from pathlib import Path

from dualpath.errors import SpecError
from dualpath.llm import AttentionKind, CostModel, LLMSpec
from dualpath.models.hf_config import load_hf_config
from dualpath.models.llms import LLM_PRESETS
from dualpath.models.profile import calibrate, load_profile
from dualpath.models.spec_table import build_spec, convert
from dualpath.tomldoc import TomlDoc

_ENUMS = {"AttentionKind": AttentionKind}


def load_llm(path: str | Path) -> LLMSpec:
    return llm_from_doc(TomlDoc.read(path))


def llm_from_text(text: str, source: str = "<model>") -> LLMSpec:
    return llm_from_doc(TomlDoc(source, text))


def llm_from_doc(doc: TomlDoc) -> LLMSpec:
    data = doc.data
    base = None
    if "preset" in data:
        preset = convert(doc, ("preset",), data["preset"], "str")
        if preset not in LLM_PRESETS:
            raise doc.error(("preset",), preset, "one of " + ", ".join(sorted(LLM_PRESETS)))
        base = LLM_PRESETS[preset]
    if "hf_config" in data:
        if base is not None:
            raise doc.error(("hf_config",), data["hf_config"], "either preset or hf_config, not both")
        base = load_hf_config(_relative(doc, convert(doc, ("hf_config",), data["hf_config"], "str")))
    cost_table = doc.table("cost")
    cost = build_spec(doc, ("cost",), CostModel, cost_table, base=base.cost if base else CostModel())
    # The [cost] keys pin those fields: a simulator calibration keeps them (as it keeps a profile's fit).
    pinned = tuple(sorted(set(cost_table) | set(base.cost_pinned if base else ())))
    values: dict[str, object] = {"cost": cost, "cost_pinned": pinned}
    if "name" not in data:
        values["name"] = Path(doc.source).stem
    llm = build_spec(doc, (), LLMSpec, data, base=base, skip=("cost", "cost_pinned"), enums=_ENUMS,
                     handled=("preset", "hf_config", "profile", "cost"), values=values)
    if "profile" not in data:
        return llm
    profile = convert(doc, ("profile",), data["profile"], "str")
    path = _relative(doc, profile)
    if not path.is_file():
        raise doc.error(("profile",), profile, f"an existing profile table (looked at {path})")
    try:
        return calibrate(llm, load_profile(path))
    except SpecError as exc:
        if exc.source == "profile":  # the fit itself failed: name the file that holds the rows
            raise SpecError(str(path), exc.field, exc.value, exc.expected) from exc
        raise


def _relative(doc: TomlDoc, name: str) -> Path:
    return Path(name) if Path(name).is_absolute() else Path(doc.source).parent / name
