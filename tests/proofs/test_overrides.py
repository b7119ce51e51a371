"""Per-port overrides TOML and the fabric built from it: masking, VLArb caps, grouping, errors."""

import pytest

from dualpath.errors import SpecError
from dualpath.proofs.example_files import example
from dualpath.proofs.fabric import build_fabric
from dualpath.proofs.opensm import load_opensm
from dualpath.proofs.overrides import load_overrides

ENTRY = """
[[port]]
node = "leaf-01"
ports = "1-4,7"
vl_cap = 2
sl2vl = "0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,3"

[[port]]
node = "spine-01"
ports = [1, 2]
type = "swe"
vlarb_low_cap = 2
high_limit = 200
"""


def fabric_for(tmp_path, text):
    path = tmp_path / "overrides.toml"
    path.write_text(text)
    return build_fabric(load_opensm(example()["opensm"]), load_overrides(path)), path


def test_entries_expand_to_ports_and_keep_unset_fields_from_the_port_type(tmp_path):
    fabric, _ = fabric_for(tmp_path, ENTRY)
    names = [p.name for p in fabric.ports]
    assert names[:4] == ["every ca port", "every sw0 port", "every swe port", "every rtr port"]
    assert names[4:] == ["leaf-01/1", "leaf-01/2", "leaf-01/3", "leaf-01/4", "leaf-01/7", "spine-01/1", "spine-01/2"]
    leaf = fabric.ports[4].qos
    assert leaf.oper_vls == 2 and leaf.num_vls == 2 and leaf.high_limit == 240
    # OpenSM masks VLs past the operational ones: VL2 -> 0 and VL3 -> 1 with two data VLs
    assert [leaf.vl_of_sl(s) for s in range(4)] == [0, 1, 0, 1]
    spine = fabric.ports[-1].qos
    assert spine.high_limit == 200 and spine.vlarb_low == ((0, 192), (1, 192)) and spine.vlarb_low_dropped == 2
    assert len(fabric.groups()) == 3  # port-type table, leaf table, spine table


def test_where_points_at_the_entry_or_falls_back_to_opensm(tmp_path):
    fabric, path = fabric_for(tmp_path, ENTRY)
    leaf, spine = fabric.ports[4], fabric.ports[-1]
    assert leaf.where("sl2vl").file == str(path) and leaf.where("sl2vl").line == 6
    assert leaf.where("sl2vl").text == "0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,3"
    assert leaf.where("oper_vls").line == 5  # vl_cap
    assert spine.where("sl2vl").key == "qos_sl2vl" and spine.where("high_limit").line == 13


@pytest.mark.parametrize("text, line, fragment", [
    ('[[port]]\nnode = "a"\nports = 1\ncolour = 1\n', 4, "colour"),
    ('[[port]]\nnode = "a"\nports = "1-x"\n', 3, "port number"),
    ('[[port]]\nnode = "a"\nports = 1\nvl_cap = 3\n', 4, "1, 2, 4, 8, 15"),
    ('[[port]]\nnode = "a"\nports = 1\ntype = "hca"\n', 4, "ca, sw0, swe, rtr"),
    ('[[port]]\nnode = "a"\nports = 1\n\n[[port]]\nnode = "b"\nports = 2\nsl2vl = "0,1"\n', 8, "16 comma"),
    ('[[port]]\nnode = "a"\nports = 1\nhigh_limit = 256\n', 4, "0..255"),
    ('[[port]]\nnode = "a"\n', 1, "port numbers"),
    ('[switch]\nname = "a"\n', 1, "port"),
    # issue 18: unicode digits, a range that would expand to 10^11 ports, [[port]] given as a plain array
    ('[[port]]\nnode = "a"\nports = "²"\n', 3, "port number"),
    ('[[port]]\nnode = "a"\nports = "١-٣"\n', 3, "port number"),
    ('[[port]]\nnode = "a"\nports = "1-100000000000"\n', 3, "port number"),
    ('port = [1, 2]\n', 1, "an array of [[port]] tables"),
])
def test_bad_entries_name_file_and_line(tmp_path, text, line, fragment):
    path = tmp_path / "o.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_overrides(path)
    assert info.value.line == line and fragment in str(info.value) and str(path) in str(info.value)
