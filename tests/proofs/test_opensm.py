"""OpenSM options file: QoS keys in OpenSM syntax, per-port-type fallback, errors with file and line."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualpath.errors import InputError, SpecError
from dualpath.proofs.example_files import example
from dualpath.proofs.opensm import BUILTIN, PORT_TYPES, Where, load_opensm, parse_vlarb


def write(tmp_path, text):
    path = tmp_path / "opensm.conf"
    path.write_text(text)
    return path


def test_paper_options_resolve_for_every_port_type_through_the_generic_keys():
    opts = load_opensm(example()["opensm"])
    assert opts.qos and opts.max_op_vls == 3
    for port_type in PORT_TYPES:
        tables, sources = opts.resolve(port_type)
        assert tables.max_vls == 4 and tables.high_limit == 240
        assert tables.vlarb_high == ((0, 192), (1, 192), (2, 0), (3, 192))
        assert tables.vlarb_low == ((0, 192), (1, 192), (2, 64), (3, 192))
        assert tables.sl2vl == (0, 1, 2, 3) * 4
        assert sources["sl2vl"].key == "qos_sl2vl" and sources["sl2vl"].line is not None


def test_per_type_key_wins_and_unset_markers_fall_back(tmp_path):
    path = write(tmp_path, "qos TRUE\nqos_high_limit 240\nqos_swe_high_limit 200\nqos_ca_high_limit -1\n"
                           "qos_ca_max_vls 0\nqos_rtr_sl2vl (null)\n")
    opts = load_opensm(path)
    swe, swe_src = opts.resolve("swe")
    ca, ca_src = opts.resolve("ca")
    assert swe.high_limit == 200 and swe_src["high_limit"] == Where(str(path), 3, "qos_swe_high_limit", "200")
    assert ca.high_limit == 240 and ca_src["high_limit"].key == "qos_high_limit"
    assert ca.max_vls == 15 and ca_src["max_vls"].line is None  # OpenSM built-in default
    rtr, _ = opts.resolve("rtr")
    assert rtr.sl2vl == tuple(int(v) for v in BUILTIN["sl2vl"].split(","))


def test_later_unset_line_cancels_an_earlier_value_as_in_opensm(tmp_path):
    opts = load_opensm(write(tmp_path, "qos_ca_vlarb_low 0:64\nqos_ca_vlarb_low (null)\nqos_vlarb_low 1:64\n"))
    assert opts.resolve("ca")[0].vlarb_low == ((1, 64),)


def test_qos_defaults_to_false_and_other_keys_are_ignored(tmp_path):
    opts = load_opensm(write(tmp_path, "routing_engine what ever tokens\nlog_flags 0x83\n# comment\n\n"))
    assert not opts.qos and opts.qos_where.line is None and opts.settings == {}


@pytest.mark.parametrize("text, line, kind, fragment", [
    ("qos TRUE\nqos_max_vls\n", 2, InputError, "no value"),
    ("qos_vlarb_high 0:192, 1:192\n", 1, InputError, "first token"),
    ("\n\nqos_vlarb_low 0-192\n", 3, InputError, "VL:weight"),
    ("qos_vlarb_low 15:64\n", 1, SpecError, "0..14"),
    ("qos_vlarb_high 0:256\n", 1, SpecError, "0..255"),
    ("qos_sl2vl 0,1,2,3\n", 1, SpecError, "16 comma-separated"),
    ("qos_sl2vl 0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,16\n", 1, SpecError, "0..15"),
    ("qos_max_vls 16\n", 1, SpecError, "0..15"),
    ("qos_high_limit 300\n", 1, SpecError, "-1..255"),
    ("qos maybe\n", 1, InputError, "TRUE or FALSE"),
    ("max_op_vls 9\n", 1, SpecError, "1..5"),
    ("qos_ca_sl2vl x,1,2,3,0,1,2,3,0,1,2,3,0,1,2,3\n", 1, InputError, "not an integer"),
])
def test_malformed_lines_name_file_and_line(tmp_path, text, line, kind, fragment):
    path = write(tmp_path, text)
    with pytest.raises(kind) as info:
        load_opensm(path)
    assert info.value.line == line and str(path) in str(info.value) and fragment in str(info.value)


def test_trailing_comment_after_the_value_is_fine(tmp_path):
    opts = load_opensm(write(tmp_path, "qos_high_limit 240 # one low packet per ~1 MB\n"))
    assert opts.resolve("ca")[0].high_limit == 240


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_opensm(tmp_path / "nope.conf")


def test_where_fix_writes_the_line_in_the_file_syntax():
    assert Where("o.conf", 7, "qos_sl2vl").fix("0,1") == "o.conf:7: qos_sl2vl 0,1"
    assert Where("o.conf", None, "qos").fix("TRUE").startswith("o.conf (add the line): qos TRUE")
    assert Where("p.toml", 3, "[[port]] node=sw1 sl2vl").fix("0,1") == 'p.toml:3: sl2vl = "0,1"'


@given(st.lists(st.tuples(st.integers(0, 14), st.integers(0, 255)), min_size=1, max_size=64))
def test_vlarb_tables_round_trip(entries):
    text = ",".join(f"{v}:{w}" for v, w in entries)
    assert parse_vlarb(text, Where("f", 1, "qos_vlarb_low")) == tuple(entries)


def test_more_than_64_vlarb_entries_is_an_error():
    with pytest.raises(SpecError, match="at most 64"):
        parse_vlarb(",".join(["0:4"] * 65), Where("f", 2, "qos_vlarb_low"))
