"""A client of `dualpath serve`, standard library only: what a router or a group leader calls.

    dualpath serve --api-key secret &            # 2P4D model: 16 PE and 32 DE slots
    python examples/serve_client.py --url http://127.0.0.1:8200 --api-key secret

It registers 16 prefill and 32 decode engines under their own names, posts a group leader's report and
an engine's KV events, routes two requests (one by hit tokens, one by block hashes), finishes one,
cancels the other and prints the service's route metrics.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
from typing import Any
from urllib.parse import urlsplit


class DualpathClient:
    """One keep-alive HTTP connection to the service; every call returns the decoded JSON body."""

    def __init__(self, url: str, api_key: str, timeout_s: float = 10.0):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout_s)
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        self.conn.request(method, path, json.dumps(body) if body is not None else None, self.headers)
        resp = self.conn.getresponse()
        data = resp.read()
        is_json = resp.getheader("content-type", "").startswith("application/json")
        return resp.status, json.loads(data) if is_json else data.decode()

    def register(self, engines: list[dict[str, Any]]) -> Any:
        return self.call("POST", "/v1/engines", {"engines": engines})[1]

    def report(self, engines: list[dict[str, Any]], read_queues: list[dict[str, Any]]) -> Any:
        return self.call("POST", "/v1/reports", {"engines": engines, "read_queues": read_queues})[1]

    def kv_events(self, engine: str, events: list[dict[str, Any]]) -> Any:
        return self.call("POST", "/v1/kv-events", {"engine": engine, "events": events})[1]

    def route(self, **request: Any) -> Any:
        return self.call("POST", "/v1/route", request)[1]

    def done(self, request_id: str) -> Any:
        return self.call("POST", f"/v1/requests/{request_id}/done")[1]

    def cancel(self, request_id: str) -> Any:
        return self.call("DELETE", f"/v1/requests/{request_id}")[1]

    def metrics(self) -> str:
        return str(self.call("GET", "/metrics")[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8200")
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args(argv)
    client = DualpathClient(args.url, args.api_key)
    # Engines under their own names; those on one host share its storage NIC and read queue.
    prefill = [{"id": f"vllm-prefill-{h}-{g}", "url": f"http://prefill-{h}:{8000 + g}", "role": "prefill",
                "node": f"prefill-{h}"} for h in range(2) for g in range(8)]
    decode = [{"id": f"sglang-decode-{h}-{g}", "url": f"http://decode-{h}:{9000 + g}", "role": "decode",
               "node": f"decode-{h}"} for h in range(4) for g in range(8)]
    print("registered", len(client.register(prefill + decode)["engines"]), "engines")
    # A group leader's report: per engine unfinished requests and tokens, free HBM; its node's read queue.
    client.report([{"id": e["id"], "unfinished_requests": 3, "unfinished_tokens": 12_000} for e in prefill[:8]],
                  [{"node": "prefill-0", "queued_bytes": 20e9}])
    # vLLM/SGLang KV events: the blocks an engine stored (prefix-chained hashes of 64-token blocks).
    client.kv_events("vllm-prefill-0-0", [{"type": "BlockStored", "block_hashes": list(range(1, 401)),
                                           "parent_block_hash": None, "block_size": 64}])
    by_tokens = client.route(request_id="agent7-turn3", prompt_tokens=30_000, hit_tokens=28_000, output_tokens=400)
    by_hashes = client.route(request_id="agent9-turn2", prompt_tokens=26_000, block_hashes=list(range(1, 401)),
                             output_tokens=400)
    for decision in (by_tokens, by_hashes):
        print(json.dumps(decision, indent=1))
    client.done("agent7-turn3")
    client.cancel("agent9-turn2")
    print("\n".join(line for line in client.metrics().splitlines() if line.startswith("dualpath_route_decision")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
