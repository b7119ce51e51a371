"""Acceptance: `dualpath serve` as a real process on a free port, spoken to over HTTP."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

KEY = "test-key-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server():
    port = free_port()
    env = dict(os.environ, DUALPATH_API_KEY=KEY)
    proc = subprocess.Popen([sys.executable, "-m", "dualpath.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    else:
        proc.kill()
        pytest.fail("dualpath serve did not answer /healthz in 60 s")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def sample(metrics: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m[1] == name and ",".join(sorted((m[2] or "").split(","))) == want:
            return float(m[3])
    raise AssertionError(f"{name}{labels} not in /metrics")


@pytest.mark.slow
def test_serve_registers_reports_indexes_routes_cancels_and_exports_metrics(server):
    assert httpx.post(f"{server}/v1/route", json={"prompt_tokens": 10, "output_tokens": 1}).status_code == 401
    assert httpx.get(f"{server}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    for path in ("/docs", "/openapi.json", "/no-such-path"):
        r = httpx.get(f"{server}{path}")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
    assert httpx.get(f"{server}/v1/engines", headers={"Authorization": f"bearer {KEY}"}).status_code == 200
    c = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    # 2P4D: 16 PE and 32 DE slots. Arbitrary names, hosts grouping engines onto model nodes.
    pes = [{"id": f"vllm/prefill:{h}.{g}", "url": f"http://10.0.0.{h}:{8000 + g}", "role": "prefill",
            "node": f"gpu-box-{h}"} for h in range(2) for g in range(8)]
    des = [{"id": f"sglang decode #{i}", "url": f"http://10.0.1.{i}:30000", "role": "decode"} for i in range(32)]
    r = c.post("/v1/engines", json={"engines": pes + des})
    assert r.status_code == 200, r.text
    slots = {e["id"]: (e["slot"], e["model_node"]) for e in r.json()["engines"]}
    assert slots["vllm/prefill:1.3"] == ("PE11", "P1") and slots["sglang decode #31"] == ("DE31", "D3")
    extra = c.post("/v1/engines", json={"engines": [{"id": "one-too-many", "url": "http://x", "role": "decode"}]})
    assert extra.status_code == 409 and "one-too-many" in extra.json()["error"] and "32 DEs" in extra.json()["error"]
    # A group leader's report (per engine seq, tokens, free HBM; its node's read queue); unknown engines refused.
    r = c.post("/v1/reports", json={"engines": [{"id": p["id"], "unfinished_requests": 2, "unfinished_tokens": 8000}
                                                for p in pes[:8]],
                                    "read_queues": [{"node": "gpu-box-0", "queued_bytes": 40e9}]})
    assert r.status_code == 200, r.text
    r = c.post("/v1/reports", json={"engines": [{"id": "ghost", "unfinished_requests": 0, "unfinished_tokens": 0}]})
    assert r.status_code == 404 and "ghost" in r.json()["error"]
    # KV events as vLLM publishes them feed the prefix index; a route by hashes gets the stored prefix.
    events = [{"type": "BlockStored", "block_hashes": list(range(100, 500)), "parent_block_hash": None,
               "block_size": 64, "token_ids": []},
              {"type": "BlockStored", "block_hashes": [900, 901], "parent_block_hash": None, "block_size": 64},
              {"type": "BlockRemoved", "block_hashes": [901]}]
    r = c.post("/v1/kv-events", json={"engine": pes[0]["id"], "events": events})
    assert r.json() == {"blocks_added": 402, "blocks_removed": 1, "blocks_indexed": 401}
    r = c.post("/v1/route", json={"request_id": "by-hash", "prompt_tokens": 26_000, "output_tokens": 300,
                                  "block_hashes": [*range(100, 300), 7]})
    assert r.status_code == 200 and r.json()["hit_tokens"] == 200 * 64 and r.json()["status"] == "routed"
    # 1,000 routes, the group leaders reporting their engines drained every 50 (the service's estimate
    # between reports only grows: without reports, new requests wait for the prefill horizon); then
    # finish some and cancel some.
    drained = {"engines": [{"id": e["id"], "unfinished_requests": 0, "unfinished_tokens": 0, "free_hbm_bytes": 50e9}
                           for e in pes + des],
               "read_queues": [{"node": f"gpu-box-{h}", "queued_bytes": 0} for h in range(2)]}
    for i in range(1000):
        if i % 50 == 49:
            assert c.post("/v1/reports", json=drained).status_code == 200
        r = c.post("/v1/route", json={"request_id": f"req-{i}", "prompt_tokens": 20_000 + 37 * i,
                                      "hit_tokens": 18_000 + 37 * i, "output_tokens": 400, "agent": i % 97})
        assert r.status_code in (200, 202), r.text
        d = r.json()
        if d["status"] == "routed":
            assert d["pe"]["id"].startswith("vllm/") and d["de"]["id"].startswith("sglang")
            assert d["read"]["pe_read_bytes"] + d["read"]["de_read_bytes"] > 0 and d["binding"]
    c.post("/v1/reports", json=drained)
    before = c.get("/metrics").text
    assert sample(before, "dualpath_requests_in_flight", state="routed") == 1001  # by-hash and the 1,000
    assert sample(before, "dualpath_requests_in_flight", state="queued") == 0
    assert c.post("/v1/route", json={"request_id": "req-0", "prompt_tokens": 5, "output_tokens": 1}).status_code == 409
    for i in range(0, 1000, 10):
        assert c.delete(f"/v1/requests/req-{i}").json()["status"] == "cancelled"
    assert c.delete("/v1/requests/req-0").status_code == 404
    for i in range(1, 1000, 10):
        if c.get(f"/v1/requests/req-{i}").json()["status"] == "routed":
            assert c.post(f"/v1/requests/req-{i}/done").status_code == 200
    c.post("/v1/reports", json={"read_queues": [{"node": "gpu-box-0", "queued_bytes": 40e9}]})
    m = c.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert sample(text, "dualpath_route_decision_seconds_count") == 1001
    assert sample(text, "dualpath_requests_total", outcome="cancelled") == 100
    assert sample(text, "dualpath_path_bytes_total", path="storage_to_pe") > 0
    assert sample(text, "dualpath_path_bytes_total", path="de_to_pe") == sample(text, "dualpath_path_bytes_total",
                                                                                 path="storage_to_de")
    assert sample(text, "dualpath_node_read_queue_bytes", node="gpu-box-0", model_node="P0") == 40e9
    # Decode nodes (no host given: the model's names) read too; nobody reported their queues, so they grow.
    assert sample(text, "dualpath_node_read_queue_bytes", node="D3", model_node="D3") > 0
    assert sample(text, "dualpath_engines_registered", role="decode") == 32
    assert 0 <= sample(text, "dualpath_slo_ttft_attainment_ratio") <= 1
    assert sample(text, "dualpath_kv_blocks_indexed") == 401
    assert "dualpath_scheduler_fallbacks_total" in text and "dualpath_predicted_ttft_seconds_bucket" in text
