"""The shared input reader: every reader that goes through it turns a bad file into one line, not a traceback."""

import importlib

import pytest

from dualpath.errors import InputError
from dualpath.validate import read_text

READERS = [
    ("dualpath.proofs.opensm", "load_opensm"),
    ("dualpath.proofs.envfile", "load_env"),
    ("dualpath.proofs.mlnx_qos", "load_mlnx_qos"),
    ("dualpath.proofs.qos_policy", "load_qos_policy"),
    ("dualpath.proofs.sonic", "load_sonic"),
    ("dualpath.models.hf_config", "load_hf_config"),
]


def test_read_text_names_a_missing_file_and_a_non_utf8_one(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_text(tmp_path / "absent.conf")
    bad = tmp_path / "latin1.conf"
    bad.write_bytes("qos_high_limit 240 # \xe9".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text") as info:
        read_text(bad)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize(("module", "reader"), READERS, ids=[r for _, r in READERS])
def test_every_reader_refuses_a_non_utf8_file_in_one_line(tmp_path, module, reader):
    bad = tmp_path / "input"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not UTF-8 text"):
        getattr(importlib.import_module(module), reader)(bad)
