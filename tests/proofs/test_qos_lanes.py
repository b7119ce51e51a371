"""QoS lane properties: proved on the paper's tables, violated with the offending entry otherwise."""

from dualpath.proofs.example_files import example, variant
from dualpath.proofs.fabric import build_fabric
from dualpath.proofs.opensm import load_opensm
from dualpath.proofs.overrides import load_overrides
from dualpath.proofs.qos_lanes import (
    check_class_reaches_vl,
    check_kv_collective_isolation,
    check_qos_enabled,
    check_sl_vl_range,
)
from dualpath.proofs.result import Status
from dualpath.proofs.traffic import load_traffic

PAPER_SL2VL = "qos_sl2vl 0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,3"


def load(paths, overrides=None):
    opensm = load_opensm(paths["opensm"])
    return opensm, build_fabric(opensm, load_overrides(overrides) if overrides else None), \
        load_traffic(paths["traffic"])


def test_paper_tables_prove_every_lane_property():
    opensm, fabric, plan = load(example())
    assert check_qos_enabled(opensm).status is Status.PROVED
    for check in (check_class_reaches_vl, check_kv_collective_isolation, check_sl_vl_range):
        assert check(fabric, plan).status is Status.PROVED, check


def test_qos_false_or_absent_is_violated(tmp_path):
    opensm, _, _ = load(variant(tmp_path / "a", {"opensm": [("qos TRUE", "qos FALSE")]}))
    result = check_qos_enabled(opensm)
    assert result.status is Status.VIOLATED and "opensm.conf:15 qos: FALSE" in result.witness
    assert result.fix.endswith("opensm.conf:15: qos TRUE")
    opensm, _, _ = load(variant(tmp_path / "b", {"opensm": [("qos TRUE\n", "")]}))
    result = check_qos_enabled(opensm)
    assert result.status is Status.VIOLATED and "not set" in result.witness and "(add the line)" in result.fix


def test_class_on_wrong_vl_on_hca_ports_only(tmp_path):
    paths = variant(tmp_path, {"opensm": [("qos_ca_sl2vl (null)", "qos_ca_sl2vl 0,0,2,3,0,1,2,3,0,1,2,3,0,1,2,3")]})
    _, fabric, plan = load(paths)
    result = check_class_reaches_vl(fabric, plan)
    assert result.status is Status.VIOLATED
    assert result.witness.startswith("every ca port: class allreduce") and "qos_ca_sl2vl" in result.witness
    assert "qos_ca_sl2vl 0,1,2,3" in result.fix and "[1 of 4 checked ports" in result.witness


def test_kv_sharing_a_collective_vl(tmp_path):
    paths = variant(tmp_path, {"opensm": [(PAPER_SL2VL, "qos_sl2vl 0,1,1,3,0,1,2,3,0,1,2,3,0,1,2,3")]})
    _, fabric, plan = load(paths)
    result = check_kv_collective_isolation(fabric, plan)
    assert result.status is Status.VIOLATED and "VL 1 carries KV class" in result.witness
    assert "qos_sl2vl 0,1,2,3" in result.fix


def test_sl_to_vl15_and_past_the_operational_vls(tmp_path):
    paths = variant(tmp_path / "a", {"opensm": [(PAPER_SL2VL, "qos_sl2vl 0,1,2,15,0,1,2,3,0,1,2,3,0,1,2,3")]})
    _, fabric, plan = load(paths)
    result = check_sl_vl_range(fabric, plan)
    assert result.status is Status.VIOLATED and "SL 3" in result.witness and "VL15" in result.witness
    # VL 6 with four operational VLs: OpenSM masks it to VL 2, so the KV classes still land on VL 2,
    # but the table entry is out of range and says so
    paths = variant(tmp_path / "b", {"opensm": [(PAPER_SL2VL, "qos_sl2vl 0,1,6,3,0,1,2,3,0,1,2,3,0,1,2,3")]})
    _, fabric, plan = load(paths)
    result = check_sl_vl_range(fabric, plan)
    assert result.status is Status.VIOLATED and "masks it to VL 2" in result.witness
    assert check_class_reaches_vl(fabric, plan).status is Status.PROVED


def test_one_bad_port_among_overrides_is_named(tmp_path):
    paths = example()
    text = "".join(f'[[port]]\nnode = "sw{i}"\nports = "1-36"\n\n' for i in range(5))
    text += '[[port]]\nnode = "sw9"\nports = 17\nsl2vl = "0,1,0,3,0,1,2,3,0,1,2,3,0,1,2,3"\n'
    (tmp_path / "o.toml").write_text(text)
    _, fabric, plan = load(paths, tmp_path / "o.toml")
    result = check_kv_collective_isolation(fabric, plan)
    assert result.witness.startswith("sw9/17: VL 0 carries KV class")
    assert f"{tmp_path / 'o.toml'}:24" in result.fix and "[1 of 185 checked ports" in result.witness
