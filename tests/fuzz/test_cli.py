"""The command line in-process on generated flag values and damaged files: exit 0-3, and a refusal
(exit 2) is exactly one line on stderr naming the flag; a value outside a flag's bounds is refused."""

from __future__ import annotations

import random
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualpath.cli import main
from tests.fuzz.cases import FORMATS, bench

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# The commands that stop right after their flags (a missing cluster file, no secret, no API key), so
# that any accepted value ends at once; the other commands' flags use the same `dualpath.flags` types.
FLAG_SPECS = [spec for spec in bench.FLAGS if spec[0][0] in bench.SENTINELS]


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    def hang(*_):
        raise TimeoutError(f"dualpath {' '.join(a[:40] for a in argv)}: still running after 60 s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        code = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    _, err = capsys.readouterr()
    assert code in (0, 1, 2, 3), (code, err[-500:])
    if code == 2:
        assert err.count("\n") == 1 and "Traceback" not in err, err[-500:]
    return code, err


@SETTINGS
@given(spec=st.sampled_from(FLAG_SPECS),
       value=st.one_of(st.sampled_from(bench.FLAG_VALUES), st.text(max_size=12),
                       st.integers().map(str), st.floats().map(repr)))
def test_numeric_flags(capsys, monkeypatch, tmp_path, spec, value):
    prefix, flag, valid = spec
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DUALPATH_SECRET", raising=False)
    monkeypatch.delenv("DUALPATH_API_KEY", raising=False)
    if value.startswith("-") and not value[1:2].isdigit():
        value = " " + value  # argparse would take '-inf' for an option: its refusal is another test's
    code, err = run_cli(capsys, [*prefix, flag, value])
    if not valid(value.strip()) and value.strip() != "":
        sentinel = bench.SENTINELS.get(prefix[0], "")
        assert code == 2 and (flag in err or flag[2:] in err), err
        assert not sentinel or sentinel not in err, f"{flag} {value!r} got through: {err}"


@SETTINGS
@given(text=st.text(min_size=0, max_size=300))
def test_name_flags(capsys, monkeypatch, tmp_path, text):
    monkeypatch.chdir(tmp_path)
    for argv in (["info", "--cluster", text], ["info", "--model", text], ["workload", "--workload", text]):
        if text.startswith("-"):
            argv[-1] = "./" + text
        run_cli(capsys, argv)


@pytest.mark.parametrize("family", sorted(FORMATS))
def test_damaged_files_through_the_command(capsys, monkeypatch, tmp_path, family):
    """Three damaged copies of each format through its command (the benchmark runs thousands)."""
    fmt = FORMATS[family]
    if family == "secret-file":
        pytest.skip("an accepted secret starts torch in this process: the subprocess suite covers it")
    monkeypatch.chdir(tmp_path)
    cases = bench.format_cases(fmt, random.Random(f"cli:{family}"), 30)
    picked = [c for c in cases if not isinstance(c.files[fmt.target], str)]  # no FIFO or /dev/zero here
    for case in random.Random(family).sample(picked, 3):
        folder = tmp_path / str(abs(hash(case.label)))
        folder.mkdir()
        bench._materialise(folder, case.files)
        monkeypatch.chdir(folder)
        code, _err = run_cli(capsys, list(case.argv))
        if case.must_reject:
            assert code == 2, f"{case.label}: accepted"
