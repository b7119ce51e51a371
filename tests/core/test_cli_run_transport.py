"""`dualpath run --transport`: the choice reaches every engine's command line, and a transport this
machine cannot run is refused in one line, exit 2, before any engine starts."""

import pytest

from dualpath.cli import main
from dualpath.cluster import Role
from dualpath.models.registry import resolve_cluster, resolve_model
from dualpath.runtime.engine import TRANSPORTS, EngineOptions, transport_unavailable
from dualpath.runtime.scheduling.local_runtime import LocalRuntime

RUN = ("run", "--cluster", "1P1D", "--model", "tiny", "--agents", "2", "--turns", "2", "--scale", "256")


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_the_transport_reaches_each_engines_options_and_command_line(tmp_path, kind):
    runtime = LocalRuntime(resolve_cluster("1P1D"), resolve_model("tiny"), work_dir=tmp_path, transport=kind)
    for engine in runtime.cluster.engines(Role.PREFILL) + runtime.cluster.engines(Role.DECODE):
        options = runtime.options(engine)
        assert options.transport == kind
        args = options.to_args()
        assert args[args.index("--transport") + 1] == kind


def test_tcp_always_runs_here():
    assert transport_unavailable("tcp") is None


@pytest.mark.parametrize("kind", ["verbs", "nixl"])
def test_a_transport_that_cannot_run_here_is_one_line_and_exit_2(capsys, kind):
    reason = transport_unavailable(kind)
    if reason is None:
        pytest.skip(f"{kind} can run on this machine (its package and device are present)")
    code = main([*RUN, "--transport", kind])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == f"dualpath: error: --transport {kind}: {reason}"
    assert "Traceback" not in err and out == ""  # refused before the run's header, let alone its engines


def test_an_unknown_transport_is_refused_by_the_parser(capsys):
    assert main([*RUN, "--transport", "carrier-pigeon"]) == 2
    assert "invalid choice: 'carrier-pigeon'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="transport"):
        EngineOptions(role="prefill", name="PE0", store_dir="/nonexistent", transport="carrier-pigeon")


def test_in_process_nixl_engines_refuse_a_policy_that_loads_ortools(capsys):
    reason = transport_unavailable("nixl")
    if reason is not None:
        pytest.skip(f"nixl cannot run here: {reason}")
    code = main([*RUN, "--transport", "nixl", "--in-process", "--policy", "optimized"])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and out == ""
    assert "cannot share a process with NIXL" in err and "Traceback" not in err
    assert "nixl_cu12" not in __import__("sys").modules  # the probe ran in a child process
