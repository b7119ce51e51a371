"""The shared validation layer: every reader turns a bad file into one line (exit 2), never a traceback,
a hang or a memory blow-up; specs refuse NaN, ±inf and absurd magnitudes; echoed values are cut short."""

import importlib
import json
import os
import signal

import pytest

from dualpath.cli import main
from dualpath.cluster import NodeSpec, parse_shorthand
from dualpath.errors import InputError, SpecError, shown
from dualpath.jsonio import parse_json, read_json
from dualpath.limits import MAX_NESTING_DEPTH
from dualpath.llm import CostModel
from dualpath.models.jsonl import jsonl_rows
from dualpath.models.profile import load_profile
from dualpath.tomldoc import TomlDoc
from dualpath.validate import ascii_integer, integer, number, positive, read_lines, read_text

READERS = [
    ("dualpath.proofs.opensm", "load_opensm"),
    ("dualpath.proofs.envfile", "load_env"),
    ("dualpath.proofs.mlnx_qos", "load_mlnx_qos"),
    ("dualpath.proofs.qos_policy", "load_qos_policy"),
    ("dualpath.proofs.sonic", "load_sonic"),
    ("dualpath.models.hf_config", "load_hf_config"),
    ("dualpath.models.cluster_file", "load_cluster"),
    ("dualpath.models.llm_file", "load_llm"),
    ("dualpath.models.jsonl", "read_jsonl"),
    ("dualpath.models.mooncake", "load_mooncake"),
    ("dualpath.models.profile", "load_profile"),
    ("dualpath.proofs.overrides", "load_overrides"),
    ("dualpath.jsonio", "read_json"),
    ("dualpath.plan", "Plan.load"),
    ("dualpath.trace", "Trace.load"),
]


def _reader(module: str, name: str):
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) <= 1, err
    return code, err


def test_read_text_names_a_missing_file_and_a_non_utf8_one(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_text(tmp_path / "absent.conf")
    bad = tmp_path / "latin1.conf"
    bad.write_bytes("qos_high_limit 240\n# \xe9".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text") as info:
        read_text(bad)
    assert str(bad) in str(info.value) and info.value.line == 2


@pytest.mark.parametrize(("module", "reader"), READERS, ids=[r for _, r in READERS])
def test_every_reader_refuses_a_non_utf8_file_in_one_line(tmp_path, module, reader):
    bad = tmp_path / "input"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not UTF-8 text"):
        _reader(module, reader)(bad)


@pytest.fixture
def no_hang():
    """A reader that blocks on a FIFO fails the test after 10 s instead of hanging the suite."""
    def fail(signum, frame):
        raise AssertionError("the reader blocked")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(("module", "reader"), READERS, ids=[r for _, r in READERS])
def test_every_reader_refuses_special_files_without_blocking(tmp_path, module, reader, no_hang):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: never
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")  # reading it never ends
    for path, kind in ((fifo, "a FIFO"), (zero, "a character device"), (tmp_path, "a directory")):
        if reader == "load_hf_config" and path == tmp_path:
            continue  # a folder means its config.json there: absent, which is its own one-line error
        with pytest.raises(InputError, match=f"cannot read: {kind}, not a regular file"):
            _reader(module, reader)(path)


def test_cli_refuses_a_fifo_and_a_link_to_dev_zero_with_exit_2(capsys, tmp_path, no_hang):
    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)
    code, err = _cli(capsys, "info", "--cluster", str(fifo))
    assert code == 2 and "a FIFO, not a regular file" in err
    (tmp_path / "w.jsonl").symlink_to("/dev/zero")
    code, err = _cli(capsys, "workload", "--workload", str(tmp_path / "w.jsonl"))
    assert code == 2 and "a character device, not a regular file" in err


def test_sizes_are_capped_with_the_limit_named(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("a = 1\n" * 100)
    with pytest.raises(InputError, match=r"larger than the .* limit \(dualpath.limits.MAX_TEXT_FILE_BYTES\)"):
        read_text(path, max_bytes=64)
    long_line = tmp_path / "long.jsonl"
    long_line.write_text('{"agent": 0}\n' + "x" * 5000 + "\n")
    rows = read_lines(long_line, max_line_bytes=1000)
    assert next(rows)[0] == 1  # streamed: the first line comes before the long one is read
    with pytest.raises(InputError, match=r"line longer than .* \(dualpath.limits.MAX_LINE_BYTES\)") as info:
        next(rows)
    assert info.value.line == 2


def test_jsonl_record_count_is_capped(tmp_path, monkeypatch):
    import dualpath.models.jsonl as jsonl

    monkeypatch.setattr(jsonl, "MAX_TRACE_RECORDS", 2)
    path = tmp_path / "w.jsonl"
    path.write_text('{"turns": [[1, 1]]}\n' * 3)
    with pytest.raises(InputError, match=r"more than 2 records \(dualpath.limits.MAX_TRACE_RECORDS\)"):
        list(jsonl_rows(path))
    path.write_text('{"turns": [[1, 1], [1, 1], [1, 1]]}\n')  # one line, but a request per turn
    with pytest.raises(InputError, match=r"more than 2 turns in all \(dualpath.limits.MAX_TRACE_RECORDS\)"):
        jsonl.read_jsonl(path)


@pytest.mark.parametrize("text", ["a = " + "[" * 50_000, "a" + ".a" * 100 + " = 1", "a = " + "[" * 70 + "]" * 70])
def test_deep_toml_is_refused_not_a_recursion_error(text):
    with pytest.raises(InputError, match=f"nested more than {MAX_NESTING_DEPTH} levels deep"):
        TomlDoc("deep.toml", text)


@pytest.mark.parametrize("text", ["[" * 50_000, '{"a": ' * 50_000, "[" * 70 + "]" * 70])
def test_deep_json_is_refused_not_a_recursion_error(text):
    with pytest.raises(InputError, match=f"nested more than {MAX_NESTING_DEPTH} levels deep"):
        parse_json("deep.json", text)


def test_integers_past_4300_digits_are_one_line(tmp_path):
    with pytest.raises(InputError, match="an integer of more than 4,300 digits"):
        parse_json("big.json", "[" + "9" * 5000 + "]")
    with pytest.raises(InputError, match="an integer of more than 4,300 digits"):
        TomlDoc("big.toml", "a = " + "9" * 5000)
    path = tmp_path / "w.jsonl"
    path.write_text('{"agent": ' + "1" * 5000 + ', "turns": [[1, 1]]}\n')
    with pytest.raises(InputError, match="4,300 digits") as info:
        list(jsonl_rows(path))
    assert info.value.line == 1


def test_echoed_values_are_cut_to_80_characters(tmp_path, capsys):
    assert shown("x" * 2_000_000).endswith("…(2,000,002 chars)") and len(shown("x" * 2_000_000)) < 110
    assert shown(10**5000) == "<an integer of 16,610 bits>"  # repr() would raise past 4,300 digits
    deep: list = []
    node = deep
    for _ in range(50_000):
        node.append([])
        node = node[0]
    assert len(shown(deep)) < 100  # repr() would recurse 50,000 levels
    assert shown("abc") == "'abc'" and shown(1.5) == "1.5"
    path = tmp_path / "c.toml"
    path.write_text('prefill_nodes = "' + "x" * 2_000_000 + '"\ndecode_nodes = 1\n')
    code, err = _cli(capsys, "info", "--cluster", str(path))
    assert code == 2 and len(err) < 300 and "…(2,000,002 chars)" in err


def test_number_checks_refuse_nan_inf_and_bool():
    for bad in (float("nan"), float("inf"), -float("inf"), True, "1", None):
        with pytest.raises(SpecError):
            number("s", "f", bad, 0, 10)
    with pytest.raises(SpecError, match=r"<= 10,000 \(dualpath.limits.MAX_LAYERS\)"):
        positive("s", "num_layers", 10**6, integer=True, cap="MAX_LAYERS")
    with pytest.raises(SpecError, match="an integer"):
        integer("s", "f", True, 0, 10)  # bool is not an int
    assert number("s", "f", 3, 0, 10) == 3.0 and integer("s", "f", 3, 0, 10) == 3


@pytest.mark.parametrize("text", ["²", "٣", "1_0", "+-1", "0x10", " "])
def test_ascii_integers_only(text):
    with pytest.raises(SpecError, match=r"an integer in 0\.\.63"):
        ascii_integer("f", "dscp", text, 0, 63)


def test_specs_refuse_nan_inf_and_absurd_magnitudes():
    with pytest.raises(SpecError, match=r"cnic_gbps = inf: expected a positive number <= 1e\+07"):
        NodeSpec(cnic_gbps=float("inf"))
    with pytest.raises(SpecError, match="host_mem_gb_per_s = nan"):
        NodeSpec(host_mem_gb_per_s=float("nan"))
    with pytest.raises(SpecError, match=r"peak_tflops = inf: .*MAX_TFLOPS"):
        CostModel(peak_tflops=float("inf"))
    with pytest.raises(SpecError, match="prefill_overhead_s = nan"):
        CostModel(prefill_overhead_s=float("nan"))
    from dualpath.calibration import Calibration

    for field in ("rdma_submit_s", "schedule_interval_s", "snic_read_efficiency", "weight_bytes_per_param",
                  "de_load_submit_s"):
        for bad in (float("nan"), float("inf")):
            with pytest.raises(SpecError, match=field):
                Calibration(**{field: bad})
    with pytest.raises(SpecError, match=r"num_prefill_nodes = 100000: .*MAX_NODES_PER_ROLE"):
        parse_shorthand("100000P1D")
    with pytest.raises(SpecError, match="xPyD"):
        parse_shorthand("٣P1D")  # int() would read the Arabic-Indic 3
    with pytest.raises(SpecError, match=r"at most 64 nodes of 1024 GPUs .*MAX_ROLE_GPUS"):
        parse_shorthand("4096P1D", node=NodeSpec(num_gpus=1024))  # 4M engine objects


@pytest.mark.parametrize(("text", "needle"), [
    ('preset = "ds-27b"\nnum_layers = 1e308\n', "num_layers = 1e+308: expected an integer"),
    ('preset = "ds-27b"\nnum_layers = 100000\n', "num_layers = 100000: expected a positive integer <= 10,000"),
    ('preset = "ds-27b"\ntotal_params = nan\n', "total_params = nan"),
    ('preset = "ds-27b"\n[cost]\npeak_tflops = inf\n', "cost.peak_tflops = inf"),
    ('preset = "ds-27b"\nmax_context_tokens = true\n', "max_context_tokens = True: expected an integer"),
])
def test_model_files_with_absurd_values_exit_2(capsys, tmp_path, text, needle):
    path = tmp_path / "m.toml"
    path.write_text(text)
    code, err = _cli(capsys, "info", "--model", str(path))
    assert code == 2 and needle in err and f"{path}:" in err


def test_cluster_file_with_infinite_bandwidth_exits_2(capsys, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("prefill_nodes = 1\ndecode_nodes = 1\n[node]\ncnic_gbps = inf\n")
    code, err = _cli(capsys, "info", "--cluster", str(path))
    assert code == 2 and f"{path}:4: node.cnic_gbps = inf" in err


def test_profile_csv_refuses_nan_and_unicode_digits(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("cached_tokens,new_tokens,seconds\n0,512,0.06\n0,١٢,0.09\n")
    with pytest.raises(SpecError, match="new_tokens = '١٢'") as info:
        load_profile(path)
    assert info.value.line == 3
    path.write_text("cached_tokens,new_tokens,seconds\n0,512,nan\n")
    with pytest.raises(SpecError, match="seconds = 'nan'"):
        load_profile(path)
    path.write_text("cached_tokens,new_tokens,seconds\n" + "a" * 2_000_000 + "\n")  # csv: "field larger than"
    with pytest.raises(InputError, match="a line of 2,000,000 characters"):
        load_profile(path)


def test_read_json_refuses_what_json_cannot_say(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"a": [1, 2]}))
    assert read_json(path) == {"a": [1, 2]}
    path.write_text("{")
    with pytest.raises(InputError, match="invalid JSON"):
        read_json(path)
