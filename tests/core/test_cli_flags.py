"""Flag bounds (`dualpath.flags`): every numeric, name and path flag refused at parse time in one line
naming the flag, the (shortened) value and the cap; nothing absurd reaches a reader or a loop."""

import argparse
import os
import subprocess
import sys
import time

import pytest

from dualpath import flags
from dualpath.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, argv, *needles):
    code, _out, err = run(capsys, *argv)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# One case per cause of issue 18's "Found" list that is a flag's (the readers' are 18-A's tests).
@pytest.mark.parametrize("argv, needles", [
    (["simulate", "--agents", "1000000000000"], ["--agents", "MAX_AGENTS"]),
    (["workload", "--agents", "10^12"], ["--agents", "MAX_AGENTS"]),
    (["plan", "--batch", "1000000000000"], ["--batch", "MAX_BATCH"]),
    (["plan", "--sweep", "pd", "--gpus", "1000000000"], ["--gpus", "MAX_SWEEP_GPUS"]),
    (["simulate", "--aps", "1e-20"], ["--aps", "MIN_APS"]),  # hung: simulated time past where t + step == t
    (["simulate", "--aps", "nan"], ["--aps"]),
    (["simulate", "--policy", ""], ["--policy"]),
    (["simulate", "--policy", " , "], ["--policy", "at least one name"]),
    (["workload", "--block-tokens", "0"], ["--block-tokens", "MAX_BLOCK_TOKENS"]),
    (["run", "--cluster", "1P1D", "--block-tokens", "1000000000"], ["--block-tokens", "MAX_RUN_BLOCK_TOKENS"]),
    (["plan", "--time-limit", "nan"], ["--time-limit", "finite"]),
    (["plan", "--time-limit", "inf"], ["--time-limit", "finite"]),
    (["simulate", "--agents", "²"], ["--agents"]),  # int() would take '٣' and str.isdigit() '²'
    (["simulate", "--agents", "9" * 5000], ["--agents", "chars"]),  # past int()'s 4,300 digits, shortened
    (["simulate", "--jobs", "0"], ["--jobs", "MAX_JOBS"]),
    (["simulate", "--slo-ttft-s", "-inf"], ["--slo-ttft-s"]),
    (["run", "--cluster", "1P1D", "--scale", "0.001"], ["--scale"]),
    (["run", "--cluster", "1P1D", "--inject", "corrupt-block:nan"], ["--inject"]),
    (["run", "--cluster", "1P1D", "--device", "tpu"], ["--device"]),
    (["info", "--cluster", "x" * 300], ["--cluster", "255 bytes"]),  # stat() would raise ENAMETOOLONG
    (["plan", "--sweep", "pd", "--gpus", "3", "--batch", "2", "--solver", "greedy"], ["--gpus", "two nodes"]),
])
def test_absurd_flag_values_are_one_line_naming_the_flag_and_cap(capsys, argv, needles):
    refused(capsys, argv, *needles)


def test_output_paths_of_the_wrong_kind_are_refused(capsys, tmp_path):
    existing = tmp_path / "file.txt"
    existing.write_text("x")
    refused(capsys, ["info", "--json", str(tmp_path)], "--json", "not a directory")
    refused(capsys, ["simulate", "--out", str(existing)], "--out", "not an existing file")
    refused(capsys, ["plan", "--json", str(existing / "inside.json")], "--json", "folder")
    refused(capsys, ["workload", "--jsonl", str(tmp_path)], "--jsonl")


def test_input_files_that_are_not_regular_files_are_refused_before_reading(capsys, tmp_path):
    fifo = tmp_path / "plan.fifo"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero, tmp_path):
        refused(capsys, ["simulate", "--plan", str(path)], "--plan", "regular file")
    refused(capsys, ["verify", "--opensm", str(fifo), "--traffic", str(fifo)], "--opensm")


@pytest.mark.parametrize("flag, value, needle", [
    ("--port", "99999", "0..65,535"), ("--port", "http", "--port"), ("--data-port", "-1", "--data-port"),
    ("--host", "a b", "host name"), ("--host", "", "--host"), ("--log-level", "LOUD", "DEBUG"),
    ("--scheduler", "host:²", "HOST:PORT"), ("--scheduler", "host:70000", "HOST:PORT"),
    ("--hbm-bytes", str(2**63 - 1), "MAX_HBM_BYTES"), ("--snic-bytes-per-s", "inf", "finite"),
    ("--corrupt-block-rate", "nan", "--corrupt-block-rate"), ("--block-tokens", "0", "--block-tokens"),
])
def test_engine_flags_are_checked_at_parse_time(capsys, tmp_path, flag, value, needle):
    refused(capsys, ["engine", "--role", "prefill", "--name", "PE0", "--store", str(tmp_path / "kv"), flag, value],
            flag, needle)


def test_engine_store_and_secret_file_must_be_what_they_say(capsys, tmp_path):
    base = ["engine", "--role", "prefill", "--name", "PE0"]
    existing = tmp_path / "file"
    existing.write_text("x")
    refused(capsys, [*base, "--store", str(existing)], "--store", "not an existing file")
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    for secret in (fifo, tmp_path, "/dev/zero", tmp_path / "missing"):
        refused(capsys, [*base, "--store", str(tmp_path / "kv"), "--secret-file", str(secret)], "--secret-file")


@pytest.mark.parametrize("content, needle", [
    (b"\xff\xfe" + b"s" * 40, "UTF-8"),
    (b"s" * (flags.MAX_SECRET_BYTES + 1), "MAX_SECRET_BYTES"),
    (b"short", "at least"),
])
def test_engine_secret_files_with_bad_content_are_one_line(capsys, tmp_path, content, needle):
    secret = tmp_path / "secret"
    secret.write_bytes(content)
    err = refused(capsys, ["engine", "--role", "prefill", "--name", "PE0", "--store", str(tmp_path / "kv"),
                           "--secret-file", str(secret)], needle)
    assert "s" * 30 not in err  # the secret itself is never echoed


def test_the_engine_module_entry_point_gives_one_line_too(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dualpath.runtime.engine", "--role", "prefill", "--name", "PE0",
                           "--store", str(tmp_path), "--port", "99999"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--port" in proc.stderr, proc.stderr


def test_a_huge_value_is_shortened_in_the_message(capsys):
    err = refused(capsys, ["simulate", "--agents", "7" * (2 << 20)], "--agents")
    assert len(err) < 300


def test_the_lowest_arrival_rate_still_finishes_quickly(capsys):
    started = time.perf_counter()
    code, out, _ = run(capsys, "simulate", "--cluster", "2P4D", "--agents", "2", "--policy", "dualpath",
                       "--aps", repr(flags.MIN_APS))
    assert code == 0 and "dualpath" in out
    assert time.perf_counter() - started < 30


@pytest.mark.parametrize("text, value", [("5", 5), (" 7", 7), ("+3", 3), ("0", 0)])
def test_integer_takes_ascii_digits_in_range(text, value):
    assert flags.integer(0, 10)(text) == value


@pytest.mark.parametrize("text", ["11", "-1", "1_0", "٣", "²", "1.0", "", "0x5", "9" * 30, "nan"])
def test_integer_refuses_anything_else(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"0\.\.10"):
        flags.integer(0, 10)(text)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e308", "1_0", "٣", "", "0", "abc", "1e-400"])
def test_number_refuses_non_finite_out_of_range_and_non_ascii(text):
    with pytest.raises(argparse.ArgumentTypeError):
        flags.number(0.0, 100.0, low_open=True)(text)


def test_hosts_addresses_and_levels():
    for good in ("127.0.0.1", "::1", "localhost", "node-1.example.com"):
        assert flags.host(good) == good
    for bad in ("a b", "-x", "a..b", "x" * 300, "a/b"):
        with pytest.raises(argparse.ArgumentTypeError):
            flags.host(bad)
    assert flags.address("10.0.0.1:80") == "10.0.0.1:80" and flags.address("[::1]:8000") == "[::1]:8000"
    assert flags.log_level("debug") == "DEBUG"
    assert flags.optional(flags.name)("") == ""


@pytest.mark.parametrize("command", ["info", "workload", "simulate", "plan", "run", "engine", "verify", "serve",
                                     "demo"])
def test_every_command_help_still_prints(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and "usage: dualpath" in out
