"""`dualpath verify --synthesize` (issue 17 item 4): the written opensm.conf and library settings are
re-verified by the same checker; impossible plans name the conflicting requirements."""

from fractions import Fraction

import pytest

from dualpath.cli import main
from dualpath.proofs.example_files import example, examples_dir, variant
from dualpath.proofs.report import verify
from dualpath.proofs.result import Status
from dualpath.proofs.roce_spec import load_roce
from dualpath.proofs.synthesis import Conflict, Synthesis, synthesize
from dualpath.proofs.traffic import load_traffic


def write(tmp_path, result: Synthesis):
    conf, env = tmp_path / "opensm.conf", tmp_path / "opensm.env"
    conf.write_text(result.opensm_text)
    env.write_text(result.env_text)
    return conf, env


def test_paper_plan_synthesis_verifies_with_every_property_proved(tmp_path):
    paths = example()
    result = synthesize(load_traffic(paths["traffic"]), load_roce(paths["roce"]))
    assert isinstance(result, Synthesis)
    # KV gets the whole ceiling 1 - collective_share_min (0.99): no table can give it more.
    assert result.kv_share == result.kv_ceiling == Fraction(1, 100) and result.high_limit == 99
    assert "qos_vlarb_low 0:0,1:0,2:64,3:0" in result.opensm_text and "NCCL_IB_TC=104" in result.env_text
    conf, env = write(tmp_path, result)
    report = verify(conf, paths["traffic"], roce_path=paths["roce"], env_paths=[env])
    assert [p.name for p in report.properties if p.status is not Status.PROVED] == [] and report.exit_code() == 0
    # The synthesized share beats the paper's hand-written table on the same question.
    ours = next(p for p in report.properties if p.name == "kv_min_share").detail
    paper = next(p for p in verify(paths["opensm"], paths["traffic"]).properties if p.name == "kv_min_share").detail
    assert "gets 1%" in ours and "gets 1%" not in paper


def test_collective_bound_beyond_the_high_window_uses_the_low_table_too(tmp_path):
    paths = variant(tmp_path, {"traffic": [("collective_share_min = 0.99 ", "collective_share_min = 0.999 ")]})
    result = synthesize(load_traffic(paths["traffic"]))
    assert isinstance(result, Synthesis) and result.collective_share >= Fraction(999, 1000)
    conf, env = write(tmp_path, result)
    report = verify(conf, paths["traffic"], env_paths=[env])
    assert report.exit_code() == 0, report.to_text()


@pytest.mark.parametrize("edits, needles", [
    ([("collective_share_min = 0.99 ", "collective_share_min = 0.999 "),
      ("kv_share_min = 0.0004 ", "kv_share_min = 0.01 ")], ("collective_share_min = 0.999", "kv_share_min = 0.01",
                                                             "sum to 1")),
    ([("[classes.storage_read]\nkind = \"kv\"\nsl = 2", "[classes.storage_read]\nkind = \"kv\"\nsl = 1")],
     ("class storage_read (SL 1 -> VL 2)", "(SL 1 -> VL 1)", "one VL")),
    ([("[classes.management]\nkind = \"management\"\nsl = 3\nvl = 3", "[classes.management]\nkind = \"collective\"\n"
       "sl = 3\nvl = 2")], ("KV class", "collective management on VL 2", "must not share a VL")),
    ([('carries = ["h2d_d2h"]', 'carries = ["h2d_d2h", "allreduce"]')], ("library ucx", "SLs [1, 2]")),
    ([("model_wait_max_ns = 500 ", "model_wait_max_ns = 100 ")], ("model_wait_max_ns = 100", "kv_no_starvation")),
    ([("collective_share_min = 0.99 ", "collective_share_min = 0.99999 ")], ("collective_share_min = 0.99999",
                                                                               "at most")),
])
def test_impossible_plans_name_the_conflicting_requirements(tmp_path, edits, needles):
    paths = variant(tmp_path, {"traffic": edits})
    result = synthesize(load_traffic(paths["traffic"]))
    assert isinstance(result, list) and result and all(isinstance(c, Conflict) for c in result)
    text = " | ".join(map(str, result))
    assert all(n in text for n in needles), text
    assert "traffic.toml:" in text


def test_cli_synthesize_writes_and_reverifies_or_exits_one(tmp_path, capsys):
    paths = example()
    out = tmp_path / "synth" / "opensm.conf"
    code = main(["verify", "--synthesize", str(out), "--traffic", str(paths["traffic"]), "--roce",
                 str(paths["roce"]), "--quiet"])
    text = capsys.readouterr().out
    assert code == 0 and out.exists() and out.with_suffix(".env").exists() and "all hold" in text
    assert "qos_high_limit 99" in out.read_text()
    impossible = examples_dir() / "synth-impossible" / "traffic.toml"
    code = main(["verify", "--synthesize", str(tmp_path / "no.conf"), "--traffic", str(impossible)])
    text = capsys.readouterr().out
    assert code == 1 and "conflict:" in text and "kv_share_min" in text and not (tmp_path / "no.conf").exists()
    assert main(["verify", "--traffic", str(paths["traffic"])]) == 2
