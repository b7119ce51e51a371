"""OpenSM's QoS policy file (issue 17 item 2): parsing with file:line errors, OpenSM's matching order,
and `qos_policy_sl` deriving each SA-resolving library's SL from the fabric's own policy."""

import pytest

from dualpath.errors import InputError, SpecError
from dualpath.proofs.example_files import example
from dualpath.proofs.policy_sl import check_policy_sl, load_policy
from dualpath.proofs.qos_policy import load_qos_policy, policy_file_of
from dualpath.proofs.report import verify
from dualpath.proofs.result import Status
from dualpath.proofs.traffic import load_traffic

FULL = """
port-groups
    port-group
        name: Storage
        port-guid: 0x10-0x1F, 0x30
    end-port-group
    port-group
        name: Part
        partition: Part1
    end-port-group
end-port-groups
qos-setup
    anything here is ignored
end-qos-setup
qos-levels
    qos-level
        name: DEFAULT
        sl: 0
    end-qos-level
    qos-level
        name: KV
        sl: 2
    end-qos-level
end-qos-levels
qos-match-rules
    qos-match-rule
        destination: Storage
        service-id: 0x100-0x1FF
        qos-level-name: KV
    end-qos-match-rule
    qos-match-rule
        source: Part
        qos-level-name: KV
    end-qos-match-rule
end-qos-match-rules
qos-ulps
    any, pkey 0x8001 : 5
    sdp, port-num 30000 : 6
    ipoib : 4
    default : 1
end-qos-ulps
"""


def policy(tmp_path, text=FULL):
    path = tmp_path / "qos-policy.conf"
    path.write_text(text)
    return load_qos_policy(path)


@pytest.mark.parametrize("query, sl, line", [
    ({"service_id": 0x150, "destination": "0x15"}, 2, 26),      # first match rule
    ({"service_id": 0x150, "destination": "0x20"}, 1, 40),      # GUID outside the group: ulps default
    ({"service_id": 0x150}, 1, 40),                             # the rule needs a destination the query lacks
    ({"pkey": 0x8001}, 5, 37),                                  # qos-ulps in order
    ({"service_id": 0x10000 + 30000}, 6, 38),                   # sdp port-num -> service ID 0x1PPPP
    ({"pkey": 0x7FFF}, 4, 39),                                  # bare ipoib = default pkey 0x7fff
])
def test_sl_follows_opensm_matching_order(tmp_path, query, sl, line):
    got, why = policy(tmp_path).sl_for(query)
    assert got == sl and f"qos-policy.conf:{line}" in why, why


def test_partition_group_membership_is_unknown_not_guessed(tmp_path):
    got, why = policy(tmp_path).sl_for({"source": "0x99"})
    assert got is None and "partition" in why and "qos-policy.conf:31" in why


def test_default_qos_level_when_no_ulps(tmp_path):
    text = "qos-levels\n qos-level\n  name: DEFAULT\n  sl: 3\n end-qos-level\nend-qos-levels\n"
    assert policy(tmp_path, text).sl_for({"service_id": 1})[0] == 3


@pytest.mark.parametrize("text, error, fragment, line", [
    ("qos-levels\n qos-level\n  name: DEFAULT\n  sl: 16\n end-qos-level\nend-qos-levels\n", SpecError, "0..15", 4),
    ("qos-levels\n qos-level\n  name: X\n  colour: 1\n", InputError, "colour", 4),
    ("qos-ulps\n  default 3\nend-qos-ulps\n", InputError, "default 3", 2),
    ("qos-ulps\n  nfs : 3\nend-qos-ulps\n", SpecError, "nfs", 2),
    ("qos-match-rules\n qos-match-rule\n  qos-level-name: NOPE\n end-qos-match-rule\nend-qos-match-rules\n",
     SpecError, "NOPE", 3),
    ("port-groups\n", InputError, "not closed", None),
    ("whatever\n", InputError, "expected a section", 1),
])
def test_bad_policy_names_file_and_line(tmp_path, text, error, fragment, line):
    with pytest.raises(error) as info:
        policy(tmp_path, text)
    assert fragment in str(info.value) and info.value.line == line and "qos-policy.conf" in str(info.value)


def test_real_state_example_takes_ucx_sl_from_the_policy():
    paths = example("paper-real-state")
    assert policy_file_of(paths["opensm"]).endswith("qos-policy.conf")
    plan = load_traffic(paths["traffic"])
    _, pol = load_policy(paths["opensm"])
    result = check_policy_sl(pol, plan)
    assert result.status is Status.PROVED and "ucx: SL 2" in result.detail and "qos-level KV" in result.detail


def test_broken_policy_fixture_names_the_deciding_line():
    paths = example("broken-qos-policy-sl")
    result = check_policy_sl(load_policy(paths["opensm"])[1], load_traffic(paths["traffic"]))
    assert result.status is Status.VIOLATED and "gets SL 0" in result.witness and "qos-ulps default" in result.witness
    assert "qos-policy.conf:" in result.fix and "UCX_IB_SL=2" in result.fix


def test_without_a_policy_the_sa_answers_sl_zero():
    paths = example("paper-real-state")
    result = check_policy_sl(None, load_traffic(paths["traffic"]))
    assert result.status is Status.VIOLATED and "no qos_policy_file" in result.witness


def test_policy_flag_overrides_and_property_is_asked_only_when_relevant(tmp_path):
    paths = example("paper-real-state")
    good = verify(paths["opensm"], paths["traffic"], qos_policy_path=example("paper-real-state")["opensm"].parent
                  / "qos-policy.conf")
    assert any(p.name == "qos_policy_sl" and p.status is Status.PROVED for p in good.properties)
    plain = verify(example()["opensm"], example()["traffic"])
    assert all(p.name != "qos_policy_sl" for p in plain.properties)
