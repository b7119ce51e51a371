"""Traffic plan TOML and KEY=VALUE env files: values, and errors naming file and line."""

import pytest

from dualpath.errors import InputError, SpecError
from dualpath.proofs.envfile import load_env
from dualpath.proofs.example_files import example, variant
from dualpath.proofs.traffic import load_traffic
from dualpath.tomldoc import TomlDoc


def test_paper_plan():
    plan = load_traffic(example()["traffic"])
    assert {k.kind for k in plan.classes} == {"collective", "kv", "management"}
    assert {k.sl for k in plan.of_kind("kv")} == {2} and {k.vl for k in plan.of_kind("kv")} == {2}
    libs = {lib.name: lib for lib in plan.libraries}
    assert libs["nccl"].env_value == 1 and libs["nccl"].env_where.line == 3
    assert libs["threefs"].plan_value == 2 and libs["threefs"].env_value is None
    assert plan.cluster.prefill_nodes == 2 and plan.fabric.mtu_bytes == 4096


def line_of(path, needle):
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize("edit, needle, fragment", [
    (("[fabric]", "colour = 3\n[fabric]"), "colour = 3", "colour"),
    (("kind = \"collective\"\nsl = 0", "kind = \"collective\"\nsl = 0\nlane = 2"), "lane = 2", "lane"),
    (("[classes.management]\nkind = \"management\"\nsl = 3", "[classes.management]\nkind = \"management\"\nsl = 16"),
     "sl = 16", "0..15"),
    (("sl = 2\nvl = 2\n\n[classes.de_to_pe]", "sl = 2\nvl = 15\n\n[classes.de_to_pe]"), "vl = 15", "0..14"),
    (("kind = \"management\"", "kind = \"control\""), "kind = \"control\"", "collective, kv, management"),
    (("carries = [\"alltoall\"]", "carries = [\"all2all\"]"), "carries = [\"all2all\"]", "class names"),
    (("mtu_bytes = 4096", "mtu_bytes = 4000"), "mtu_bytes = 4000", "IB MTU"),
    (("value = 2 ", "value = 99 "), "value = 99", "0..15"),
])
def test_bad_plan_values_name_the_line(tmp_path, edit, needle, fragment):
    paths = variant(tmp_path, {"traffic": [edit]})
    with pytest.raises(SpecError) as info:
        load_traffic(paths["traffic"])
    assert info.value.line == line_of(paths["traffic"], needle)
    assert str(paths["traffic"]) in str(info.value) and fragment in str(info.value)


def test_toml_syntax_error_names_the_line(tmp_path):
    paths = variant(tmp_path, {"traffic": [("link_gbps = 400", "link_gbps = = 400")]})
    with pytest.raises(InputError) as info:
        load_traffic(paths["traffic"])
    assert info.value.line == line_of(paths["traffic"], "link_gbps = = 400")


def test_env_file_errors_name_the_env_line(tmp_path):
    paths = variant(tmp_path, {"env": [("MC_IB_SL=2", "MC_IB_SL=two")]})
    with pytest.raises(SpecError) as info:
        load_traffic(paths["traffic"])
    assert info.value.line == line_of(paths["env"], "MC_IB_SL=two") and "paper.env" in str(info.value)
    paths = variant(tmp_path, {"env": [("MC_IB_SL=2", "MC_IB_SL=²")]})  # issue 18: isdigit() took '²'
    with pytest.raises(SpecError, match=r"MC_IB_SL = '²': expected an integer in 0\.\.15"):
        load_traffic(paths["traffic"])
    paths = variant(tmp_path, {"env": [("UCX_IB_SL=2", "UCX_IB_SL 2")]})
    with pytest.raises(InputError) as info:
        load_traffic(paths["traffic"])
    assert info.value.line == line_of(paths["env"], "UCX_IB_SL 2")


def test_env_syntax(tmp_path):
    path = tmp_path / "x.env"
    path.write_text("# c\n\nexport A=1\nB = \"two words\"\nC='x'\nD=3 # note\nA=4\n")
    env = load_env(path)
    assert {k: v.value for k, v in env.items()} == {"A": "4", "B": "two words", "C": "x", "D": "3"}
    assert env["A"].line == 7
    path.write_text("E=\"open\n")
    with pytest.raises(InputError, match="unterminated"):
        load_env(path)


def test_tomldoc_lines_for_tables_arrays_and_inline_tables(tmp_path):
    text = ('a = 1\n[t]\nb = [\n  [1, 2],\n]\nc = { d = 1, e = 2 }\n[[arr]]\nx = 1\n[[arr]]\nx = 2\n'
            '[t.sub]\n"quoted key" = 3\n')
    doc = TomlDoc(tmp_path / "f.toml", text)
    assert doc.line_of("a") == 1 and doc.line_of("t", "b") == 3 and doc.line_of("t", "c", "e") == 6
    assert doc.line_of("arr", 0, "x") == 8 and doc.line_of("arr", 1, "x") == 10
    assert doc.line_of("t", "sub", "quoted key") == 12 and doc.line_of("t", "nothing") == 2
