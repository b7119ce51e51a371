"""A fabric with per-port tables: the planted bad port is found (the full 1,000 x 36 run is
benchmarks/verify_scale.py; here a smaller fabric keeps the suite fast)."""

import importlib.util

from tests.paths import BENCHMARKS

BENCH = BENCHMARKS / "verify_scale.py"


def test_planted_bad_port_is_the_only_one_reported():
    spec = importlib.util.spec_from_file_location("verify_scale", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(switches=60, ports=36, seed=3)
    assert result["ports"] == 60 * 36 + 4
    assert result["found"] and result["only_that_port"], result["witness"]
    assert result["distinct_tables"] <= 5 and result["seconds"] < 30


def test_distinct_tables_every_port_its_own_and_the_planted_port_found():
    # Issue 17 item 5: no two ports share a table; the full 1,000 x 36 figure is the benchmark's.
    spec = importlib.util.spec_from_file_location("verify_scale", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(switches=20, ports=36, seed=5, distinct=True)
    assert result["distinct_tables"] == 20 * 36 + 1  # + the one table of the 4 port-type defaults
    assert result["found"] and result["only_that_port"], result["witness"]
    assert result["parse_s"] > 0 and result["proof_s"] > 0 and result["seconds"] < 30
