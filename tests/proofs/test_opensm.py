"""OpenSM options file: QoS keys read as OpenSM reads them, per-port-type fallback, warnings with file:line.

Each rule test cites where in linux-rdma/opensm the rule comes from (source function or doc sentence).
"""

import ctypes
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualpath.cli import main
from dualpath.errors import InputError, SpecError
from dualpath.proofs.example_files import example, examples_dir
from dualpath.proofs.opensm import BUILTIN, PORT_TYPES, Where, load_opensm, parse_sl2vl, parse_vlarb
from dualpath.proofs.opensm_rules import c_strtol
from dualpath.proofs.report import verify
from dualpath.proofs.result import Status


def write(tmp_path, text):
    path = tmp_path / "opensm.conf"
    path.write_text(text)
    return path


def messages(opts):
    return [str(w) for w in opts.warnings]


def test_paper_options_resolve_for_every_port_type_through_the_generic_keys():
    opts = load_opensm(example()["opensm"])
    assert opts.qos and opts.max_op_vls == 3 and opts.warnings == ()
    for port_type in PORT_TYPES:
        tables, sources = opts.resolve(port_type)
        assert tables.max_vls == 4 and tables.high_limit == 240
        assert tables.vlarb_high == ((0, 192), (1, 192), (2, 0), (3, 192))
        assert tables.vlarb_low == ((0, 192), (1, 192), (2, 64), (3, 192))
        assert tables.sl2vl == (0, 1, 2, 3) * 4
        assert sources["sl2vl"].key == "qos_sl2vl" and sources["sl2vl"].line is not None


def test_per_type_key_wins_and_unset_markers_fall_back(tmp_path):
    # osm_qos.c qos_build_config: "if (opt->high_limit >= 0) ... else ... dflt->high_limit" and
    # "if (opt->max_vls > 0)": 0 and -1 mean "not set"; doc/qos-config.txt: the "qos_<type>_" sets.
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
    assert opts.warnings == ()  # subn_verify_max_vls / _high_limit warn only for a value above range


def test_builtin_defaults_are_the_documented_ones():
    # doc/qos-config.txt "Typical default values (hard-coded in OpenSM initialization)".
    assert BUILTIN["max_vls"] == "15" and BUILTIN["high_limit"] == "0"
    assert BUILTIN["sl2vl"] == "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,7"
    assert BUILTIN["vlarb_low"].startswith("0:0,1:4,2:4") and BUILTIN["vlarb_high"].startswith("0:4,1:0")


def test_later_unset_line_cancels_an_earlier_value_as_in_opensm(tmp_path):
    # osm_subnet.c opts_parse_charp: special case the "(null)" string -> NULL, so the type falls back.
    opts = load_opensm(write(tmp_path, "qos_ca_vlarb_low 0:64\nqos_ca_vlarb_low (null)\nqos_vlarb_low 1:64\n"))
    assert opts.resolve("ca")[0].vlarb_low == ((1, 64),)
    assert "set again at line 2" in messages(opts)[0]


def test_qos_defaults_to_false_and_other_keys_are_ignored(tmp_path):
    # osm_subn_set_default_opt: qos = FALSE; osm_subn_parse_conf_file skips a key that is not in opt_tbl.
    opts = load_opensm(write(tmp_path, "routing_engine what ever tokens\nlog_flags 0x83\n# comment\n\n"))
    assert not opts.qos and opts.qos_where.line is None and opts.settings == {} and opts.warnings == ()


def test_short_sl2vl_list_is_accepted_with_warning_and_missing_sls_go_to_vl0(tmp_path):
    # subn_verify_sl2vl: "Warning: Cached Option %s_sl2vl: < 16 VLs listed"; osm_qos.c parse_sl2vl_entry
    # reads an exhausted string as 0. doc/qos-config.txt's own example: "qos_ca_sl2vl=0,1,2,3,5,5,5,12,12,0,".
    opts = load_opensm(write(tmp_path, "qos TRUE\nqos_ca_sl2vl 0,1,2,3,5,5,5,12,12,0,\n"))
    assert opts.resolve("ca")[0].sl2vl == (0, 1, 2, 3, 5, 5, 5, 12, 12, 0, 0, 0, 0, 0, 0, 0)
    assert any("opensm.conf:2: qos_ca_sl2vl: < 16 VLs listed" in m for m in messages(opts))


def test_long_sl2vl_list_drops_the_excess(tmp_path):
    # subn_verify_sl2vl: "> 16 listed: excess VLs will be dropped"; qos_build_config reads 16 entries.
    opts = load_opensm(write(tmp_path, "qos_sl2vl " + ",".join(["1"] * 17) + "\n"))
    assert opts.resolve("swe")[0].sl2vl == (1,) * 16 and "excess VLs" in messages(opts)[0]


def test_sl2vl_value_out_of_range_keeps_four_bits(tmp_path):
    # subn_verify_sl2vl: "vl=%ld out of range" (0-15); parse_sl2vl_entry stores (val1 << 4) | (val2 & 0xf).
    opts = load_opensm(write(tmp_path, "qos_sl2vl 0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,17\n"))
    assert opts.resolve("ca")[0].sl2vl[15] == 1 and "vl=17 out of range" in messages(opts)[0]


@pytest.mark.parametrize("text, entries, fragment", [
    # osm_qos.c parse_vlarb_entry: "e->vl = val % 15" and "e->weight = (uint8_t) val";
    # subn_verify_vlarb: "vl=%ld out of range" (0-14), "weight=%ld out of range" (0-255).
    ("15:64", ((0, 64),), "vl=15 out of range"),
    ("17:64", ((2, 64),), "vl=17 out of range"),
    ("2:256", ((2, 0),), "weight=256 out of range"),
    ("2:300", ((2, 44),), "weight=300 out of range"),
])
def test_vlarb_vl_modulo_15_and_weight_truncated_to_a_byte(tmp_path, text, entries, fragment):
    opts = load_opensm(write(tmp_path, f"qos_vlarb_low {text}\n"))
    assert opts.resolve("ca")[0].vlarb_low == entries and fragment in messages(opts)[0]


def test_more_than_64_vlarb_entries_are_dropped_with_warning(tmp_path):
    # subn_verify_vlarb: "> 64 listed: excess vl:weight pairs will be dropped"; qos_build_config reads 64.
    opts = load_opensm(write(tmp_path, "qos_vlarb_low " + ",".join(["1:4"] * 65) + "\n"))
    assert len(opts.resolve("ca")[0].vlarb_low) == 64 and "> 64 listed" in messages(opts)[0]


def test_vlarb_entry_without_colon_is_warned_and_read_as_opensm_does(tmp_path):
    # subn_verify_vlarb: "vl:weight=%s improperly formatted"; parse_one_unsigned skips any one delimiter.
    opts = load_opensm(write(tmp_path, "qos_vlarb_low 0-192\n"))
    assert opts.resolve("ca")[0].vlarb_low == ((0, 192),) and "improperly formatted" in messages(opts)[0]


def test_value_is_the_rest_of_the_line_so_blanks_after_commas_are_fine(tmp_path):
    # osm_subn_parse_conf_file: key = first token, value = clean_val(rest of line); strtoul skips blanks.
    opts = load_opensm(write(tmp_path, "qos_vlarb_high 0:192, 1:192\n"))
    assert opts.resolve("ca")[0].vlarb_high == ((0, 192), (1, 192)) and opts.warnings == ()


@pytest.mark.parametrize("text, value, fragment", [
    # osm_subnet.c opts_parse_int32: strtol(p_val_str, NULL, 0), no end check: OpenSM reads the prefix.
    ("2_40", 2, "ignores '_40'"),
    ("\u0662\u0664\u0660", 0, "finds no number"),  # strtol takes ASCII digits only: Arabic-Indic 240 -> 0
    ("0x10", 16, None),
    ("010", 8, None),  # base 0: a leading 0 is octal
])
def test_integers_are_read_with_c_strtol_not_python_int(tmp_path, text, value, fragment):
    opts = load_opensm(write(tmp_path, f"qos_high_limit {text}\n"))
    assert opts.resolve("ca")[0].high_limit == value
    assert (fragment in messages(opts)[0]) if fragment else opts.warnings == ()


def test_high_limit_above_255_warns_and_uses_the_default(tmp_path):
    # subn_verify_high_limit: "Invalid Cached Option: %s_high_limit=%d: Using Default".
    opts = load_opensm(write(tmp_path, "qos_high_limit 240\nqos_swe_high_limit 300\n"))
    assert opts.resolve("swe")[0].high_limit == 240 and "Using Default" in messages(opts)[0]


def test_max_vls_above_15_warns_and_uses_the_default(tmp_path):
    # subn_verify_max_vls: "Invalid Cached Option: %s_max_vls=%u: Using Default"; OSM_DEFAULT_QOS_MAX_VLS 15.
    opts = load_opensm(write(tmp_path, "qos_max_vls 16\n"))
    assert opts.resolve("ca")[0].max_vls == 15 and "qos_max_vls=16: Using Default" in messages(opts)[0]


@pytest.mark.parametrize("value, qos", [("TRUE", True), ("FALSE", False), ("true", False), ("maybe", False)])
def test_qos_is_on_only_for_exactly_true(tmp_path, value, qos):
    # osm_subnet.c opts_parse_boolean: "if (strcmp("TRUE", p_val_str)) val = FALSE".
    opts = load_opensm(write(tmp_path, f"qos {value}\n"))
    assert opts.qos is qos and (opts.warnings == ()) == (value in ("TRUE", "FALSE"))


def test_no_qos_is_an_old_option_that_current_opensm_ignores(tmp_path):
    # osm_subnet.c opt_tbl has "qos" and no "no_qos" (the OpenSM 3.0 spelling): the line does nothing.
    opts = load_opensm(write(tmp_path, "no_qos FALSE\nqos_max_vls 4\n"))
    assert not opts.qos and "no_qos is an OpenSM 3.0 option" in messages(opts)[0]
    assert "opensm.conf:1: no_qos" in messages(opts)[0]


@pytest.mark.parametrize("line, fragment", [
    ("qos_vlarb_hi 0:64", "not an OpenSM option"),  # a typo: opt_tbl has no such key, OpenSM skips it
    ("qos_max_vls=4", "write `qos_max_vls 4`"),  # the doc's "qos_sw0_max_vls=2" style is no key for the parser
])
def test_unknown_qos_keys_are_warned_because_opensm_skips_them_silently(tmp_path, line, fragment):
    opts = load_opensm(write(tmp_path, f"qos TRUE\n{line}\n"))
    assert fragment in messages(opts)[0] and opts.settings == {}


def test_missing_value_reads_as_opensm_reads_an_empty_string(tmp_path):
    # clean_val gives ""; opts_parse_int32: strtol("") = 0, so high_limit 0 (not "unset").
    opts = load_opensm(write(tmp_path, "qos_high_limit\n"))
    assert opts.resolve("ca")[0].high_limit == 0 and "finds no number" in messages(opts)[0]


def test_trailing_comment_after_the_value_is_fine(tmp_path):
    # opts_parse_int32: strtol stops at the blank before the comment.
    opts = load_opensm(write(tmp_path, "qos_high_limit 240 # one low packet per ~1 MB\n"))
    assert opts.resolve("ca")[0].high_limit == 240 and opts.warnings == ()


@pytest.mark.parametrize("text, looks", [
    ("# SL rate\n0 400\n1 400\n2 40\n", "per-SL table"),
    ("qos-ulps\n  default : 0\nend-qos-ulps\n", "QoS policy file"),
    ("[qos]\nmax_vls = 4\n", "INI/TOML"),
    ("MAX_VLS=4\nHIGH=240\n", "KEY=VALUE"),
])
def test_a_file_that_is_not_an_options_file_is_refused_saying_what_it_looks_like(tmp_path, text, looks):
    # osm_subn_parse_conf_file would skip every line and run with defaults; we refuse (exit 2) instead.
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_opensm(path)
    assert "not an OpenSM options file" in str(info.value) and looks in str(info.value)
    assert info.value.exit_code == 2 and str(path) in str(info.value) and info.value.line is not None


def test_max_op_vls_outside_the_operational_vls_encoding_is_refused(tmp_path):
    path = write(tmp_path, "max_op_vls 9\n")
    with pytest.raises(SpecError) as info:
        load_opensm(path)
    assert info.value.line == 1 and "1..5" in str(info.value)


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


def test_more_than_64_vlarb_entries_is_an_error_in_overrides():
    with pytest.raises(SpecError, match="at most 64"):
        parse_vlarb(",".join(["0:4"] * 65), Where("f", 2, "qos_vlarb_low"))


def test_overrides_parsers_stay_strict_on_c_syntax():
    # Our own overrides format takes C integers only: no `_` separators, no non-ASCII digits.
    for text in ("2_40:64", "\u0662:64", "0:1_0"):
        with pytest.raises(InputError, match="not an integer"):
            parse_vlarb(text, Where("f", 1, "vlarb_low"))
    with pytest.raises(SpecError, match="16 comma-separated"):
        parse_sl2vl("0,1,2,3", Where("f", 1, "sl2vl"))


FIXTURES = sorted(p.parent.name for p in examples_dir().glob("opensm-*/expect-opensm.toml"))


@pytest.mark.parametrize("name", FIXTURES)
def test_opensm_fixture_fails_for_its_reason(name):
    # One fixture per rule: short list, no_qos, VL modulo 15, weight truncation, strtol prefix, foreign file.
    paths, expect = example(name), tomllib.loads((examples_dir() / name / "expect-opensm.toml").read_text())
    if "refused" in expect:
        with pytest.raises(InputError) as info:
            verify(paths["opensm"], paths["traffic"], paths["roce"])
        assert expect["refused"] in str(info.value) and expect["looks_like"] in str(info.value)
        assert info.value.line == expect["line"]
        return
    report = verify(paths["opensm"], paths["traffic"], paths["roce"])
    result = next(p for p in report.properties if p.name == expect["property"])
    assert result.status is Status.VIOLATED and report.exit_code() == 1
    assert expect["offending"] in str(result.witness) and result.fix
    assert any(expect["warning"] in w for w in report.warnings), report.warnings
    assert "OpenSM warning" in report.summary and report.to_json()["warnings"] == report.warnings


def test_cli_refuses_a_foreign_file_with_exit_2(capsys):
    paths = example("opensm-foreign-per-sl-rate")
    code = main(["verify", "--opensm", str(paths["opensm"]), "--traffic", str(paths["traffic"])])
    out = capsys.readouterr()
    assert code == 2 and "not an OpenSM options file" in out.err + out.out


LIBC = ctypes.CDLL(None)
LIBC.strtol.restype, LIBC.strtol.argtypes = ctypes.c_long, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                                               ctypes.c_int]


@given(st.text(alphabet=" \t+-0123456789xXabcdefg_:,#", max_size=12))
def test_strtol_emulation_matches_the_c_library(text):
    # OpenSM's numbers are whatever glibc's strtol(text, &end, 0) says; compare with the real one.
    raw = text.encode()
    buf = ctypes.create_string_buffer(raw)
    end = ctypes.c_void_p()
    value = LIBC.strtol(ctypes.addressof(buf), ctypes.byref(end), 0)
    consumed = (end.value or 0) - ctypes.addressof(buf)
    ours, our_end, _ = c_strtol(text)
    assert (max(-(1 << 63), min((1 << 63) - 1, ours)), our_end) == (value, consumed)
