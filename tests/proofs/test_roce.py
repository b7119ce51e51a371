"""RoCE properties and the RoCE TOML parser."""

import pytest

from dualpath.errors import SpecError
from dualpath.proofs.example_files import example, variant
from dualpath.proofs.result import Status
from dualpath.proofs.roce import check_class_tc, check_ets, check_pfc, check_strict_kv
from dualpath.proofs.roce_spec import load_roce
from dualpath.proofs.traffic import load_traffic

CHECKS = (check_class_tc, check_pfc, check_ets, check_strict_kv)


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
])
def test_bad_roce_values_name_the_line(tmp_path, edit, fragment):
    paths = variant(tmp_path, {"roce": [edit]})
    with pytest.raises(SpecError) as info:
        load_roce(paths["roce"])
    assert fragment in str(info.value) and info.value.line is not None and str(paths["roce"]) in str(info.value)
