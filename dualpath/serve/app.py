"""The HTTP API of `dualpath serve` (FastAPI): engines, reports, KV events, routing, metrics.

Every path but GET /healthz (the API, /metrics, /docs, unknown paths) needs `Authorization: Bearer <api
key>` (as vLLM's --api-key): a pure ASGI middleware checks it, in constant time, before FastAPI routes
the request, so nothing is reachable without it and the check costs no dependency resolution.
Endpoints are `async` and call the router directly: a decision takes well under a millisecond, less
than a hop to a worker thread would cost, and the router's lock keeps it correct if a caller runs it
from threads anyway. Errors answer `{"error": "<one line>"}`.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated, Any, Literal

from dualpath.cluster import Role
from dualpath.errors import DualpathError, require
from dualpath.serve.metrics import ServeMetrics
from dualpath.serve.registry import ServeError
from dualpath.serve.router import EngineReport, Router, Tracked

require("fastapi", "serve")

from fastapi import FastAPI, Request, Response  # noqa: E402  (after the extra's check)
from fastapi.responses import JSONResponse  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

Hash = int | str
Count = Annotated[int, Field(ge=0)]


class EngineIn(BaseModel):
    id: Annotated[str, Field(min_length=1, max_length=200)]
    url: Annotated[str, Field(min_length=1, max_length=2000)]
    role: Literal["prefill", "decode"]
    node: Annotated[str, Field(min_length=1, max_length=200)] | None = None  # host; same host, same node


class EnginesIn(BaseModel):
    engines: Annotated[list[EngineIn], Field(min_length=1)]


class EngineLoad(BaseModel):
    id: str
    unfinished_requests: Count
    unfinished_tokens: Count
    free_hbm_bytes: Count | None = None


class ReadQueue(BaseModel):
    node: str
    queued_bytes: Annotated[float, Field(ge=0)]


class ReportIn(BaseModel):
    engines: list[EngineLoad] = []
    read_queues: list[ReadQueue] = []
    finished: list[str] = []  # request ids finished since the last report


class BlockStored(BaseModel):
    type: Literal["BlockStored"]
    block_hashes: list[Hash]
    parent_block_hash: Hash | None = None
    block_size: int | None = None
    token_ids: list[int] | None = None  # published by vLLM; not needed here


class BlockRemoved(BaseModel):
    type: Literal["BlockRemoved"]
    block_hashes: list[Hash]


class AllBlocksCleared(BaseModel):
    type: Literal["AllBlocksCleared"]


KVEvent = Annotated[BlockStored | BlockRemoved | AllBlocksCleared, Field(discriminator="type")]


class KVEventsIn(BaseModel):
    engine: str
    events: list[KVEvent]


class RouteIn(BaseModel):
    request_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    prompt_tokens: Annotated[int, Field(ge=1)]
    output_tokens: Annotated[int, Field(ge=1)]
    hit_tokens: Count | None = None  # or block_hashes: the prefix index counts the stored leading blocks
    block_hashes: list[Hash] | None = None
    agent: int = 0
    turn: int = 0


def decision_json(router: Router, t: Tracked) -> dict[str, Any]:
    r, a = t.request, t.assignment
    out: dict[str, Any] = {"request_id": r.id, "status": router.status_of(t), "hit_tokens": r.hit_tokens,
                           "new_tokens": r.new_tokens, "binding": t.binding}
    if a is None:
        return out
    pe, de = router.registry.by_slot.get(a.pe), router.registry.by_slot.get(a.de)
    out.update(
        pe={"id": pe.id if pe else None, "url": pe.url if pe else None, "slot": a.pe},
        de={"id": de.id if de else None, "url": de.url if de else None, "slot": a.de},
        read={"side": a.path, "pe_read_bytes": a.pe_read_bytes, "de_read_bytes": a.de_read_bytes},
        predicted_ttft_s=round(t.predicted_ttft_s, 6),
    )
    return out


def create_app(router: Router, api_key: str, metrics: ServeMetrics) -> FastAPI:
    """The service around `router`; `api_key` must be non-empty (the CLI refuses to start without one)."""
    if not api_key:
        raise ServeError("dualpath serve needs an API key (--api-key or DUALPATH_API_KEY)")
    app = FastAPI(title="dualpath serve", description=__doc__, version="1")
    app.add_middleware(BearerAuth, api_key=api_key)

    @app.exception_handler(DualpathError)
    async def refused(_: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"error": str(err)}, getattr(err, "http_status", 400))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "engines": len(router.registry.by_id)}

    @app.post("/v1/engines")
    async def register(body: EnginesIn) -> dict[str, Any]:
        done = router.register([(e.id, e.url, Role(e.role), e.node) for e in body.engines])
        return {"engines": [{"id": e.id, "url": e.url, "role": e.role.value, "node": e.host, "slot": e.slot.name,
                             "model_node": e.slot.node} for e in done]}

    @app.get("/v1/engines")
    async def engines() -> dict[str, Any]:
        with router.lock:
            return {"engines": [{"id": e.id, "url": e.url, "role": e.role.value, "node": e.host,
                                 "slot": e.slot.name, "load": router.engines[e.slot.name].num_tokens}
                                for e in router.registry.by_id.values()]}

    @app.delete("/v1/engines/{engine_id}")
    async def unregister(engine_id: str) -> dict[str, Any]:
        return {"id": router.unregister(engine_id).id, "status": "removed"}

    @app.post("/v1/reports")
    async def report(body: ReportIn) -> dict[str, Any]:
        routed = router.report([EngineReport(e.id, e.unfinished_requests, e.unfinished_tokens, e.free_hbm_bytes)
                                for e in body.engines], {q.node: q.queued_bytes for q in body.read_queues},
                               body.finished)
        return {"routed": routed}

    @app.post("/v1/kv-events")
    async def kv_events(body: KVEventsIn) -> dict[str, Any]:
        added = removed = 0
        for ev in body.events:
            if isinstance(ev, BlockStored):
                if ev.block_size is not None and ev.block_size != router.block_tokens:
                    raise ServeError(f"BlockStored.block_size = {ev.block_size}: expected the service's "
                                     f"--block-tokens {router.block_tokens}")
                added += router.kv_stored(body.engine, ev.block_hashes, ev.parent_block_hash)
            else:
                removed += router.kv_removed(body.engine, ev.block_hashes if isinstance(ev, BlockRemoved) else None)
        return {"blocks_added": added, "blocks_removed": removed, "blocks_indexed": len(router.blocks)}

    @app.post("/v1/route")
    async def route(body: RouteIn) -> JSONResponse:
        t = router.route(body.request_id or uuid.uuid4().hex, body.prompt_tokens, body.output_tokens,
                         body.hit_tokens, body.block_hashes, body.agent, body.turn)
        # 202 when queued: a later report or route decides it (GET the request). A Response skips
        # FastAPI's generic encoder, a tenth of the call's time.
        return JSONResponse(decision_json(router, t), 200 if t.assignment is not None else 202)

    @app.get("/v1/requests/{request_id}")
    async def request_status(request_id: str) -> dict[str, Any]:
        return decision_json(router, router.get(request_id))

    @app.post("/v1/requests/{request_id}/done")
    async def done(request_id: str) -> dict[str, Any]:
        router.done(request_id)
        return {"request_id": request_id, "status": "done"}

    @app.delete("/v1/requests/{request_id}")
    async def cancel(request_id: str) -> dict[str, Any]:
        t = router.cancel(request_id)
        return {"request_id": request_id, "status": "cancelled", "was": router.status_of(t)}

    @app.get("/metrics")
    async def scrape() -> Response:
        return Response(metrics.render(router), media_type=metrics.content_type)

    return app


class BearerAuth:
    """ASGI middleware: 401 unless `Authorization: Bearer <api key>`; GET /healthz is open (liveness probes)."""

    OPEN = frozenset({"/healthz"})

    def __init__(self, app: Any, api_key: str):
        self.app = app
        self.expected = b"bearer " + api_key.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in self.OPEN:
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            # The scheme is case-insensitive (RFC 7235), the token is not.
            if not hmac.compare_digest(given[:7].lower() + given[7:], self.expected):
                response = JSONResponse({"error": "missing or wrong bearer token"}, 401,
                                        {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
