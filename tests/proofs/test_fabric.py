"""Fabric building and per-property grouping: every distinct table is built and counted; a property is
proved once per distinct part of a table it reads; OpenSM's VLArb VL mask is applied."""

from dualpath.proofs.arbitration import check_kv_no_starvation, check_weights
from dualpath.proofs.example_files import example
from dualpath.proofs.fabric import build_fabric
from dualpath.proofs.opensm import load_opensm
from dualpath.proofs.overrides import load_overrides
from dualpath.proofs.qos_lanes import check_kv_collective_isolation
from dualpath.proofs.result import Status
from dualpath.proofs.traffic import load_traffic

GOOD = "0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,3"


def entry(node: str, sl2vl: str, extra: str = "") -> str:
    return f'[[port]]\nnode = "{node}"\nports = 1\nvl_cap = 8\nsl2vl = "{sl2vl}"\n{extra}\n'


def fabric_of(tmp_path, entries: str, opensm_text: str | None = None):
    path = tmp_path / "overrides.toml"
    path.write_text(entries)
    opensm_path = example()["opensm"]
    if opensm_text is not None:
        opensm_path = tmp_path / "opensm.conf"
        opensm_path.write_text(opensm_text)
    return build_fabric(load_opensm(opensm_path), load_overrides(path)), load_traffic(example()["traffic"])


def test_tables_differing_only_in_unused_sls_are_distinct_but_proved_once(tmp_path):
    unused = [GOOD[:8] + ",".join(str((n >> i) & 3) for i in range(0, 24, 2)) for n in range(5)]
    fabric, plan = fabric_of(tmp_path, "".join(entry(f"sw{n}", s) for n, s in enumerate(unused)))
    assert len(fabric.groups()) == 5 + 1  # every table is its own group (+ the port-type default)
    result = check_kv_collective_isolation(fabric, plan)
    assert result.status is Status.PROVED
    assert "6 distinct tables over 9 ports, 1 distinct in what this property reads" in result.detail


def test_a_bad_table_among_equivalent_ones_is_named_alone(tmp_path):
    fabric, plan = fabric_of(tmp_path, entry("sw0", GOOD) + entry("sw1", "0,1,1,3" + GOOD[7:]) + entry("sw2", GOOD))
    result = check_kv_collective_isolation(fabric, plan)
    assert result.status is Status.VIOLATED and result.witness.startswith("sw1/1:")
    assert "[1 of 7 checked ports in 1 distinct table(s) violate this]" in result.witness


def test_weights_property_reads_every_entry_so_tables_are_not_merged_across_weights(tmp_path):
    fabric, plan = fabric_of(tmp_path, entry("sw0", GOOD, 'vlarb_low = "0:192,1:192,2:64,3:192"')
                             + entry("sw1", GOOD, 'vlarb_low = "0:192,1:192,2:32,3:192"'))
    result = check_weights(fabric, plan)
    assert result.status is Status.VIOLATED and result.witness.startswith("sw1/1:")


def test_vlarb_vls_are_masked_to_the_operational_vls_as_opensm_programs_them(tmp_path):
    # osm_qos.c vlarb_update_table_block: "block.vl_entry[i].vl &= vl_mask" (vl_mask from OperVLs).
    text = example()["opensm"].read_text().replace("qos_vlarb_low 0:192,1:192,2:64,3:192",
                                                   "qos_vlarb_low 0:192,1:192,6:64,3:192")
    fabric, plan = fabric_of(tmp_path, "", text)
    assert fabric.ports[0].qos.vlarb_low == ((0, 192), (1, 192), (2, 64), (3, 192))  # 4 VLs: 6 & 3 = 2
    assert check_kv_no_starvation(fabric, plan).status is Status.PROVED
