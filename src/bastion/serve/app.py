"""The ASGI application: bastion's ``--target`` JSON protocol behind API keys, budgets, validation and an audit log.

Why FastAPI on uvicorn: an ASGI stack lets one process read request bodies incrementally (so an oversized body is
refused after ``max_body`` bytes, not after it is buffered), keep slow clients from holding worker threads, and run
the model and the SQLite transaction on a thread pool; FastAPI adds the OpenAPI schema that a schema fuzzer
(schemathesis) can drive, and uvicorn is its maintained reference server. The standard library's ``http.server``
(bastion's reference server in ``bastion.blackbox.http``) has none of that.

Endpoints (``{name}`` is a served model; the bare paths answer for the first one):

- ``POST /predict``, ``/v1/models/{name}/predict``: ``{"inputs": nested lists, "shape": [N, ...]}`` ->
  ``{"scores": [[...]]}`` or ``{"labels": [...]}`` (exactly what ``bastion attack --target URL`` sends and reads).
- ``POST /predict/batch``, ``/v1/models/{name}/predict/batch``: ``{"instances": [x_1, ...]}``, same answers.
- ``GET /v1/models``, ``/healthz``, ``/readyz`` (model loaded and database writable), ``/metrics`` (Prometheus).

Every predict request is, in order: body size (413), API key (401 none or wrong, 403 revoked), model name (404),
JSON and schema (400/422), charge of N queries against the key's budget and token bucket (429 with ``Retry-After``
and the reset time; 413 for a batch over the key's burst), model, extraction monitor (when on: the request that
makes the detector flag a key whose action is ``block`` is answered 403 ``blocked_by_detector``, as is every later
one), output hardening. Errors are ``{"error": msg}``. Each decision is one audit row; the charge and its audit row
share one transaction, as do an alarm's action and its row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from bastion.serve.keys import Decision, KeyStore
from bastion.serve.metrics import Metrics
from bastion.serve.model import Served
from bastion.serve.monitor import Monitor
from bastion.serve.output import harden
from bastion.serve.validate import BadRequest, Limits, batch_request, parse_json, predict_request

logger = logging.getLogger(__name__)


def api_key(request: Request) -> str | None:
    """The key from ``X-API-Key``, or ``Authorization: Bearer KEY``."""
    key = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if key is None and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes ``limit`` bytes, declared or sent."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, "body_too_large", f"the body has {declared} bytes, over the limit of {limit}; send "
                         "smaller batches")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, "body_too_large", f"the body passes the limit of {limit} bytes; send smaller "
                             "batches")
        chunks.append(chunk)
    return b"".join(chunks)


Answer = tuple[int, dict[str, Any], dict[str, str], str | None]  # status, JSON body, headers, rejection reason


class Service:
    """The request path of one app: admission (body, key, model, validation), then charge, model and hardening."""

    def __init__(self, models: list[Served], store: KeyStore, limits: Limits, monitor: Monitor | None) -> None:
        self.models, self.store, self.limits, self.monitor = models, store, limits, monitor
        self.by_name = {m.name: m for m in models}
        self.metrics = Metrics()

    async def respond(self, request: Request, name: str | None, parse: Callable, endpoint: str) -> Response:
        start = time.perf_counter()
        status, payload, headers, reason = await self.answer(request, name, parse, endpoint)
        self.metrics.observe(endpoint, status, time.perf_counter() - start, reason)
        return JSONResponse(payload, status_code=status, headers=headers)

    async def answer(self, request: Request, name: str | None, parse: Callable, endpoint: str) -> Answer:
        who: Decision | None = None
        try:
            body = await read_body(request, self.limits.max_body)
            who = await run_in_threadpool(self.store.identify, api_key(request))
            if who.status != 200:
                await run_in_threadpool(self.store.record, who, 0, endpoint)
                return who.status, {"error": who.message}, {}, who.reason
            model = self.by_name.get(name or self.models[0].name)
            if model is None:
                raise BadRequest(404, "unknown_model", f"no model named {name!r}; served: {', '.join(self.by_name)}")
            x = await run_in_threadpool(lambda: parse(parse_json(body, self.limits), model.input_shape, self.limits,
                                                      model.lower, model.upper))
        except BadRequest as bad:
            denied = Decision(bad.status, bad.reason, bad.message, who.key_id if who else None)
            await run_in_threadpool(self.store.record, denied, 0, endpoint)
            return bad.status, {"error": bad.message}, {}, bad.reason
        return await self.charge_and_run(request, model, x, endpoint)

    async def charge_and_run(self, request: Request, model: Served, x: Any, endpoint: str) -> Answer:
        n = int(x.shape[0])
        decision = await run_in_threadpool(self.store.authorize, api_key(request), n, endpoint)
        if decision.status != 200:
            headers = {"Retry-After": str(max(1, round(decision.retry_after)))} if decision.retry_after else {}
            payload: dict[str, Any] = {"error": decision.message}
            if decision.reset_at is not None:
                headers["X-Budget-Reset"] = f"{decision.reset_at:.0f}"
                payload["reset_at"] = decision.reset_at
            return decision.status, payload, headers, decision.reason
        logits = await run_in_threadpool(model, x)
        self.metrics.queries.labels(model.name).inc(n)
        if (self.monitor is not None and decision.key_id is not None
                and await run_in_threadpool(self.monitor.observe, decision.key_id, model, x)):
            blocked = await self.raise_alarm(decision, endpoint)
            if blocked is not None:
                return blocked
        return 200, harden(logits, decision.policy), {}, None

    async def raise_alarm(self, decision: Decision, endpoint: str) -> Answer | None:
        """Apply the key's ``on_alarm`` action; the 403 answer when it is ``block``."""
        assert self.monitor is not None and decision.key_id is not None
        action = decision.policy.on_alarm
        await run_in_threadpool(self.store.alarm, decision.key_id, action, self.monitor.name, endpoint)
        self.metrics.alarms.labels(self.monitor.name, action).inc()
        logger.warning("bastion serve: %s flagged key %s as extraction; action %s", self.monitor.name,
                       decision.key_id, action)
        if action != "block":
            return None
        return 403, {"error": "this API key was blocked: its queries looked like model extraction; ask the "
                     "operator to review it"}, {}, "blocked_by_detector"


def create_app(models: list[Served], store: KeyStore, limits: Limits = Limits(),
               monitor: Monitor | None = None) -> FastAPI:
    """The service for ``models`` (the first answers the bare paths), with keys and audit in ``store``, and the
    extraction ``monitor`` (None: off) watching every key's answered inputs."""
    service = Service(models, store, limits, monitor)
    app = FastAPI(title="bastion serve", version="1", docs_url=None, redoc_url=None)
    for path, parse, endpoint in (("/predict", predict_request, "predict"), ("/predict/batch", batch_request, "batch")):
        _routes(app, service, path, parse, endpoint)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"models": [{"name": m.name, "input_shape": list(m.input_shape), "num_classes": m.num_classes,
                            "kind": m.kind, "lower": m.lower, "upper": m.upper} for m in models]}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            await run_in_threadpool(store.list)
        except Exception as err:  # the database is gone or locked: not ready, say why
            return JSONResponse({"status": "not ready", "error": f"database: {err}"}, status_code=503)
        return JSONResponse({"status": "ready", "models": list(service.by_name)})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    _error_handlers(app, service.metrics)
    return app


def _routes(app: FastAPI, service: Service, path: str, parse: Callable, endpoint: str) -> None:
    """``POST path`` for the first model and ``POST /v1/models/{name}path`` for any served one."""

    @app.post(path, name=f"{endpoint}_default")
    async def default(request: Request) -> Response:
        return await service.respond(request, None, parse, endpoint)

    @app.post(f"/v1/models/{{name}}{path}", name=f"{endpoint}_named")
    async def named(name: str, request: Request) -> Response:
        return await service.respond(request, name, parse, endpoint)


def _error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        metrics.rejections.labels(f"http_{exc.status_code}").inc()
        return JSONResponse({"error": f"{exc.detail} ({request.method} {request.url.path}); see GET /v1/models and "
                             "POST /predict"}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        logger.exception("bastion serve: unexpected failure on %s", request.url.path)
        metrics.rejections.labels("server_error").inc()
        return JSONResponse({"error": "internal error (logged); the request was not answered"}, status_code=500)
