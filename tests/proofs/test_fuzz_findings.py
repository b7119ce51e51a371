"""Readers of the fabric files against what 18-B's fuzzing found (issue 18): one line, never a traceback."""

import pytest

from dualpath.errors import DualpathError, SpecError
from dualpath.proofs.example_files import variant
from dualpath.proofs.opensm import load_opensm
from dualpath.proofs.sonic import load_sonic
from dualpath.proofs.traffic import load_traffic


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and len(text) < 400, text[:400]
    return text


@pytest.mark.parametrize(("text", "needle"), [
    ("apiVersion: v1\nkind: Pod\n\x00\n", "invalid YAML"),  # PyYAML's message for a NUL spans lines
    ("[" * 50_000, "nested more than 64 levels deep"),  # PyYAML recurses per level
])
def test_pod_files_that_pyyaml_refuses_are_one_line(tmp_path, text, needle):
    pytest.importorskip("yaml")
    from dualpath.proofs.pod_env import load_pod_envs

    path = tmp_path / "pods.yaml"
    path.write_text(text)
    with pytest.raises(DualpathError) as info:
        load_pod_envs(path)
    assert needle in _one_line(info.value)


def test_an_opensm_number_past_4300_digits_is_a_warning_not_a_traceback(tmp_path):
    path = tmp_path / "opensm.conf"
    path.write_text("qos TRUE\nqos_vlarb_high 0:" + "9" * 5000 + "\n")
    warnings = [str(w) for w in load_opensm(path).warnings]
    assert any("weight=<an integer of 16,610 bits> out of range" in w for w in warnings)


@pytest.mark.parametrize(("db", "needle"), [
    ('{"PORT_QOS_MAP": {"E0": {"dscp_to_tc_map": [1, 2]}}}', "reference to DSCP_TO_TC_MAP = [1, 2]"),
    ('{"PORT_QOS_MAP": {"E0": {"tc_to_queue_map": 0}}}', "reference to TC_TO_QUEUE_MAP = 0"),
    ('{"PORT_QOS_MAP": {"E0": {}}, "QUEUE": {"E0|0": {"scheduler": 0}}}', "reference to SCHEDULER = 0"),
    ('{"PORT_QOS_MAP": {"E0": {}}, "QUEUE": [1]}', "QUEUE = [1]: expected a JSON object"),
    ('{"PORT_QOS_MAP": {"E0": {}}, "QUEUE": {"E0|0": 7}}', "QUEUE|E0|0 = 7"),
])
def test_sonic_values_of_the_wrong_type_are_one_line(tmp_path, db, needle):
    path = tmp_path / "config_db.json"
    path.write_text(db)
    with pytest.raises(SpecError) as info:
        load_sonic(path)
    assert needle in _one_line(info.value) and str(path) in str(info.value)


def test_an_env_sl_of_5000_digits_is_one_line(tmp_path):
    paths = variant(tmp_path, {"env": [("MC_IB_SL=2", "MC_IB_SL=" + "9" * 5000)]})
    with pytest.raises(SpecError, match=r"MC_IB_SL = '9999.*…\(5,002 chars\): expected an integer in 0\.\.15"):
        load_traffic(paths["traffic"])


@pytest.mark.parametrize(("edit", "needle"), [
    (("[classes.management]\n", "[classes.management]\ndescription = -1\n"), "description = -1: expected a string"),
    (('carries = ["alltoall"]', "carries = [{ x = 1 }]"), "a list of class names"),
])
def test_traffic_fields_of_the_wrong_type_are_refused(tmp_path, edit, needle):
    paths = variant(tmp_path, {"traffic": [edit]})
    with pytest.raises(SpecError) as info:
        load_traffic(paths["traffic"])
    assert needle in _one_line(info.value)


@pytest.mark.parametrize(("query", "needle"), [
    ('{ pkey = 70000 }', "an integer in 0..0xffff"),
    ('{ service_id = "0x10000000000000000" }', "an integer in 0..0xffffffffffffffff"),  # 2^64: past 64 bits
    ('{ qos_class = "٣" }', "an integer in 0..0xfff"),
    ('{ pkey = true }', "an integer in 0..0xffff"),
])
def test_path_query_numbers_fit_their_pathrecord_fields(query, needle):
    from dualpath.proofs.traffic import _path_query
    from dualpath.tomldoc import TomlDoc

    doc = TomlDoc("traffic.toml", f"[libraries.ucx]\npath_query = {query}\n")
    with pytest.raises(SpecError, match=needle):
        _path_query(doc, doc.data["libraries"]["ucx"], ("libraries", "ucx"))
    ok = TomlDoc("traffic.toml", '[libraries.ucx]\npath_query = { service_id = "0x7fffffffffffffff", pkey = 65535 }\n')
    assert _path_query(ok, ok.data["libraries"]["ucx"], ("libraries", "ucx"))["pkey"] == 65535
