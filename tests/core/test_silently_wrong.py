"""Issue 18's silently wrong results, each now either right or refused in one line (exit 2)."""

import dataclasses
import json

import pytest

from dualpath.cli import main
from dualpath.errors import SpecError

H20 = "examples/models/ds-27b-h20.toml"


def _jct(capsys, *argv) -> float:
    capsys.readouterr()
    assert main(["simulate", "--policy", "dualpath", "--json", "-", *argv]) == 0
    return json.loads(capsys.readouterr().out)["results"][0]["jct_s"]


def test_a_model_files_cost_table_wins_over_the_simulators_calibration():
    from dualpath.calibration import PAPER_CALIBRATION, calibrated_llm
    from dualpath.models.llm_file import load_llm
    from dualpath.models.llms import llm_preset

    h20 = load_llm(H20)
    assert h20.cost_pinned == ("hbm_gb_per_s", "peak_tflops")
    cost = calibrated_llm(h20).cost
    assert (cost.peak_tflops, cost.hbm_gb_per_s) == (148.0, 4000.0)  # the file's
    assert cost.prefill_mfu == PAPER_CALIBRATION.cost_model.prefill_mfu  # the rest: the calibration's
    assert calibrated_llm(llm_preset("ds-27b")).cost == PAPER_CALIBRATION.cost_model
    assert calibrated_llm(dataclasses.replace(h20, cost_pinned=())).cost == PAPER_CALIBRATION.cost_model


def test_simulate_runs_the_h20_file_slower_than_the_preset(capsys):
    args = ["--cluster", "1P1D", "--workload", "agentic-32k", "--agents", "6"]
    preset, h20 = _jct(capsys, *args, "--model", "ds-27b"), _jct(capsys, *args, "--model", H20)
    assert h20 > preset  # before issue 18 both gave exactly the same JCT: the [cost] table was ignored


def _trace(tmp_path, second_arrival: str, new_tokens: int = 1000) -> str:
    path = tmp_path / "t.jsonl"
    path.write_text(f'{{"id": "r0", "hit_tokens": 0, "new_tokens": {new_tokens}, "output_tokens": 10}}\n'
                    f'{{"id": "r1", "hit_tokens": 0, "new_tokens": 1000, "output_tokens": 10, '
                    f'"arrival_s": {second_arrival}}}\n')
    return str(path)


def test_offline_trace_replays_honour_arrival_times(capsys, tmp_path):
    args = ["--cluster", "1P1D", "--model", "ds-27b"]
    at_0 = _jct(capsys, *args, "--workload", _trace(tmp_path, "0"))
    at_100 = _jct(capsys, *args, "--workload", _trace(tmp_path, "100"))
    assert at_0 < 5 and 100 < at_100 < 105  # the second request cannot finish before it arrives


@pytest.mark.parametrize("arrival", ["NaN", "1e300", "-1", "Infinity", "true"])
def test_absurd_arrival_times_are_refused(capsys, tmp_path, arrival):
    code = main(["simulate", "--cluster", "1P1D", "--model", "ds-27b", "--policy", "dualpath",
                 "--workload", _trace(tmp_path, arrival)])
    err = capsys.readouterr().err
    assert code == 2 and "t.jsonl:2: arrival_s = " in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["plan", "--batch", "2"], ["simulate", "--policy", "dualpath"]])
def test_a_context_past_the_models_maximum_is_refused(capsys, tmp_path, command):
    trace = _trace(tmp_path, "0", new_tokens=200_090)  # 200,100 tokens with the output; the model holds 163,840
    code = main([*command, "--cluster", "2P4D", "--model", "deepseek-v3.2", "--workload", trace])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "request r0 (agent 0, turn 0) context = 200100: expected at most 163,840 tokens" in err


def test_a_vanishing_arrival_rate_is_refused_not_a_hang():
    from dualpath.models.registry import resolve_workload

    with pytest.raises(SpecError, match=r"agents_per_s = 1e-20: .*MAX_SECONDS"):
        resolve_workload("agentic-32k", agents=4, aps=1e-20)
