from dualpath.solver.decompose import construct
from dualpath.solver.explain import explain, to_markdown
from dualpath.solver.problem import FAMILIES, Loads, Solution, build_problem
from tests.solver.cases import DS27B, agentic_requests, cluster, request, tiny_cluster


def test_plan_level_binding_and_utilisation():
    pb = build_problem(cluster(1, 1), DS27B, agentic_requests(60, seed=1))
    sol = construct(pb, False)
    ex = explain(pb, sol, lower_bound_s=1.0)
    fam, idx, t = Loads(pb, sol).binding()
    assert ex.binding_family == fam and ex.binding_resource == pb.resource_name(fam, idx)
    assert [f.family for f in ex.families] == list(FAMILIES)
    assert all(0 <= f.mean_utilisation <= 1 + 1e-9 for f in ex.families)
    assert max(f.peak_s for f in ex.families) == t
    assert len(ex.requests) == 60


def test_request_reasons_name_the_binding_resource_and_a_runner_up():
    pb = build_problem(tiny_cluster(), DS27B, [request("a", 3072), request("b", 2048), request("c", 2048)])
    h = pb.hit_bytes
    ex = explain(pb, Solution([0, 0, 0], [0, 0, 0], [h[0], 0, 0]), lower_bound_s=0.0)
    why = {w.request: w for w in ex.requests}
    assert why["a"].path == "pe" and why["a"].binding == "P0.snic"
    assert why["b"].binding == "D0.snic"
    # Moving b to the PE side would end P0's SNIC at 5 units, later than D0's 4: a worse runner-up.
    assert why["b"].runner_up.endswith("pe-read") and why["b"].margin_s > 0
    text = to_markdown(ex)
    assert "storage NIC" in text and "| b | PE0 | DE0 | de |" in text


def test_explanations_can_be_capped():
    pb = build_problem(cluster(1, 1), DS27B, agentic_requests(30, seed=2))
    ex = explain(pb, construct(pb, False), 1.0, max_requests=5)
    assert len(ex.requests) == 5 and ex.num_requests_total == 30
    assert ex.to_json()["num_requests_explained"] == 5
