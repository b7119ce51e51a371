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
