"""RoCE properties and the RoCE TOML parser."""

import pytest

from dualpath.errors import SpecError
from dualpath.proofs.example_files import example, variant
from dualpath.proofs.result import Status
from dualpath.proofs.roce import check_class_tc, check_ets, check_pfc, check_strict_kv
from dualpath.proofs.roce_spec import load_roce
from dualpath.proofs.traffic import load_traffic

CHECKS = (check_class_tc, check_pfc, check_ets, check_strict_kv)
from dualpath.errors import InputError
from dualpath.proofs.mlnx_qos import load_mlnx_qos
from dualpath.proofs.roce import check_library_tc
from dualpath.proofs.sonic import load_sonic


def run(paths, check):
    return check(load_roce(paths["roce"]), load_traffic(paths["traffic"]))


def test_paper_roce_config_holds():
    roce = load_roce(example()["roce"])
    assert roce.tc_of_dscp(26) == 3 and roce.tc_of_dscp(10) == 1 and roce.tc_of_dscp(0) == 0
    for check in CHECKS:
        assert run(example(), check).status is Status.PROVED, check


@pytest.mark.parametrize("edit, check, needle", [
    (('trust = "dscp"', 'trust = "pcp"'), check_class_tc, "trust is 'pcp'"),
    (('"26" = 3', '"26" = 4'), check_class_tc, "goes to priority 4"),
    (('"10" = 1', '"10" = 3'), check_class_tc, "goes to priority 3"),
    (("[classes.storage_read]\ndscp = 10\ntc = 1", "[classes.storage_read]\ndscp = 26\ntc = 3"), check_class_tc,
     "TC 3 carries KV class storage_read"),
    (("pfc_priorities = [1, 3]", "pfc_priorities = [1, 3, 5]"), check_pfc, "priority 5"),
    (("pfc_priorities = [1, 3]", "pfc_priorities = [3]"), check_pfc, "without PFC"),
    (("ets_percent = [1, 4, 0, 95, 0, 0, 0, 0]", "ets_percent = [1, 4, 0, 85, 0, 0, 0, 0]"), check_ets, "sum to 90"),
    (("ets_percent = [1, 4, 0, 95, 0, 0, 0, 0]", "ets_percent = [1, 0, 4, 95, 0, 0, 0, 0]"), check_ets,
     "TC 1 carries traffic but has ETS weight 0"),
    (("strict_tcs = [6]", "strict_tcs = [1, 6]"), check_strict_kv, "KV class storage_read runs on TC 1"),
])
def test_broken_roce_configs(tmp_path, edit, check, needle):
    result = run(variant(tmp_path, {"roce": [edit]}), check)
    assert result.status is Status.VIOLATED and needle in result.witness, result.witness
    assert result.fix


@pytest.mark.parametrize("edit, fragment", [
    (('trust = "dscp"', 'trust = "dscp"\ncolour = 1'), "colour"),
    (('"26" = 3', '"64" = 3'), "DSCP 0..63"),
    (('"26" = 3', '"26" = 8'), "0..7"),
    (("priority_to_tc = [0, 1, 2, 3, 4, 5, 6, 7]", "priority_to_tc = [0, 1, 2]"), "8 integers"),
    (("[classes.alltoall]\ndscp = 26", "[classes.alltoall]\ndscp = 99"), "0..63"),
    (("lossless = false", "lossless = 1"), "true or false"),
    (('"26" = 3', '"٢٦" = 3'), "DSCP 0..63"),  # issue 18: isdigit() took Arabic digits, then int() read them
    (('"26" = 3', '"²" = 3'), "DSCP 0..63"),  # ... and '²', which int() refuses with a traceback
])
def test_bad_roce_values_name_the_line(tmp_path, edit, fragment):
    paths = variant(tmp_path, {"roce": [edit]})
    with pytest.raises(SpecError) as info:
        load_roce(paths["roce"])
    assert fragment in str(info.value) and info.value.line is not None and str(paths["roce"]) in str(info.value)


# Issue 17 item 3: the real state (mlnx_qos output, SONiC config_db.json) and the libraries' TC knobs.


def real_state(name="paper-real-state"):
    paths = example(name)
    return load_roce(paths["roce"]), load_traffic(paths["traffic"])


def test_mlnx_qos_output_is_the_nic_state():
    hop = load_mlnx_qos(example("paper-real-state")["roce"].parent / "nic.mlnx_qos")
    assert hop.trust == "dscp" and hop.device == "ens1f0np0" and hop.tc_of_dscp(26) == 3 and hop.tc_of_dscp(10) == 1
    assert hop.pfc_priorities == {1, 3} and hop.strict_tcs == {6} and hop.ets_percent[3] == 95
    assert hop.where["pfc_priorities"].line == 18 and hop.where["dscp:26"].line == 8


def test_sonic_config_db_gives_one_hop_per_port():
    hops = load_sonic(example("paper-real-state")["roce"].parent / "config_db.json")
    assert [h.device for h in hops] == ["Ethernet0", "Ethernet8"] and hops[0].ets_relative
    assert hops[0].tc_of_dscp(26) == 3 and hops[0].pfc_priorities == {1, 3} and hops[0].strict_tcs == {6}
    assert hops[1].where["pfc_priorities"].line == 37 and hops[0].where["dscp:10"].line == 4


def test_real_state_example_holds_on_every_hop():
    roce, plan = real_state()
    assert len(roce.hops) == 3
    for check in (*CHECKS, check_library_tc):
        result = check(roce, plan)
        assert result.status is Status.PROVED, (check, result.witness)


@pytest.mark.parametrize("name, check, needles", [
    ("broken-mlnx-qos-trust", check_class_tc,
     ("NIC ens1f0np0", "trust is 'pcp'", "mlnx_qos -i ens1f0np0 --trust dscp")),
    ("broken-sonic-pfc", check_pfc, ("switch port Ethernet8", "priority 1 without PFC", '"1,3"')),
    ("broken-pod-nccl-tc", check_library_tc, ("NCCL_IB_TC=40", "pods.yaml:53", 'value: "104"')),
])
def test_real_state_fixtures_fail_with_the_source_line_and_its_fix(name, check, needles):
    result = check(*real_state(name))
    assert result.status is Status.VIOLATED
    text = result.witness + " " + result.fix
    assert all(n in text for n in needles), text


def test_unset_tc_knob_means_dscp_zero(tmp_path):
    paths = variant(tmp_path, {"env": [("export NCCL_IB_TC=104\n", "")]})
    result = check_library_tc(load_roce(paths["roce"]), load_traffic(paths["traffic"]))
    assert result.status is Status.VIOLATED and "NCCL_IB_TC is not set (library default 0)" in result.witness
    assert "NCCL_IB_TC=104" in result.fix


def test_transcribed_state_next_to_mlnx_qos_is_refused(tmp_path):
    paths = variant(tmp_path, {"roce": [("", "")]}, base="paper-real-state")
    paths["roce"].write_text('trust = "dscp"\n' + paths["roce"].read_text())
    with pytest.raises(SpecError) as info:
        load_roce(paths["roce"])
    assert "real state replaces it" in str(info.value) and info.value.line == 1


@pytest.mark.parametrize("file, text, fragment", [
    ("nic.mlnx_qos", "DCBX mode: OS controlled\n", "Priority trust state"),
    ("nic.mlnx_qos", "Priority trust state: dscp\ntc: 9 ratelimit: unlimited, tsa: ets, bw: 5%\n", "0..7"),
    ("config_db.json", '{"PORT_QOS_MAP": {"Ethernet0": {"dscp_to_tc_map": "NOPE"}}}', "DSCP_TO_TC_MAP|NOPE"),
    ("config_db.json", '{"DEVICE_METADATA": {}}', "PORT_QOS_MAP"),
    ("config_db.json", '{"PORT_QOS_MAP": ', "invalid JSON"),
    # issue 18: text numbers are ASCII integers in range, never int() on anything
    ("nic.mlnx_qos", "Priority trust state: dscp\ntc: ٣ ratelimit: unlimited, tsa: ets, bw: 5%\n", "tc: N"),
    ("config_db.json", '{"PORT_QOS_MAP": {"E0": {"dscp_to_tc_map": "M"}}, "DSCP_TO_TC_MAP": {"M": {"²": "1"}}}',
     "an integer in 0..63"),
    ("config_db.json", '{"PORT_QOS_MAP": {"E0": {"dscp_to_tc_map": "M"}}, "DSCP_TO_TC_MAP": {"M": {"3": "x"}}}',
     "an integer in 0..7"),
    ("config_db.json", '{"PORT_QOS_MAP": {"E0": {"pfc_enable": "3,x"}}}', "pfc_enable = 'x'"),
    ("config_db.json", '{"PORT_QOS_MAP": {"E0": {"tc_to_queue_map": "Q"}}, "TC_TO_QUEUE_MAP": {"Q": {"1": "٣"}}}',
     "an integer in 0..63"),
    ("config_db.json", "[" * 50_000, "nested more than 64"),
])
def test_bad_state_files_name_the_file(tmp_path, file, text, fragment):
    path = tmp_path / file
    path.write_text(text)
    with pytest.raises((InputError, SpecError)) as info:
        load_mlnx_qos(path) if file.endswith("mlnx_qos") else load_sonic(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_cli_reads_the_real_state_from_flags(tmp_path, capsys):
    from dualpath.cli import main

    paper, real = example(), example("paper-real-state")
    out = tmp_path / "r.json"
    # paper-real-state's plan (UCX's SL from the SA) with paper's roce.toml: the flags bring the real state.
    code = main(["verify", "--opensm", str(real["opensm"]), "--traffic", str(real["traffic"]), "--roce",
                 str(paper["roce"]), "--mlnx-qos", str(real["mlnx_qos"]), "--sonic", str(real["sonic"]),
                 "--pod", str(real["pods"]), "--qos-policy", str(real["policy"]), "--json", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().out
    import json

    inputs = json.loads(out.read_text())["inputs"]
    assert len(inputs["roce_hops"]) == 3 and len(inputs["environments"]) == 2 and inputs["qos_policy"]
    bad = tmp_path / "bad.mlnx_qos"
    bad.write_text(real["mlnx_qos"].read_text().replace("enabled     0   1   0   1", "enabled     0   0   0   1"))
    assert main(["verify", "--opensm", str(paper["opensm"]), "--traffic", str(paper["traffic"]), "--roce",
                 str(paper["roce"]), "--mlnx-qos", str(bad), "--quiet"]) == 1
    assert "VIOLATED: roce_pfc" in capsys.readouterr().out
