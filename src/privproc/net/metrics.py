"""Prometheus metrics for every service, content-free by construction.

`instrument(app, party)` wraps a service's ASGI app: every request is counted and timed by
endpoint *template* (ids and numbers in a path become `{id}`, unknown paths become `other`, so
neither a session id nor a probe's path becomes a label) and status; `GET /metrics` serves the
text exposition. Services add their own counters through `metrics_of(app)`: open sessions,
tokens spent, errors by kind.

Rules: labels are chosen by the code from small fixed sets, never taken from a request's content
or headers; there is no label for an address, a token, a key or a body; one registry per app.
"""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["Metrics", "instrument", "metrics_of"]

_ID = re.compile(r"^(?:[0-9a-f]{16,}|[0-9]+)$")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, party: str, endpoints: set[str]) -> None:
        self.party = party
        self.endpoints = endpoints | {"/metrics"}
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "privproc_requests", "HTTP requests by endpoint and status",
            ["party", "endpoint", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "privproc_request_seconds", "Time to answer, by endpoint",
            ["party", "endpoint"], buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "privproc_errors", "Errors by kind", ["party", "kind"], registry=self.registry
        )
        self.sessions = Gauge(
            "privproc_sessions", "Open sessions", ["party"], registry=self.registry
        )
        self.tokens_spent = Counter(
            "privproc_tokens_spent", "Privacy Pass tokens spent", ["party"], registry=self.registry
        )

    def endpoint(self, path: str) -> str:
        template = "/".join("{id}" if _ID.match(p) else p for p in path.split("/"))
        return template if template in self.endpoints else "other"

    def error(self, kind: str) -> None:
        self.errors.labels(self.party, kind).inc()


class _Instrumented:
    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = self.metrics.endpoint(scope.get("path", ""))
            party = self.metrics.party
            self.metrics.requests.labels(party, endpoint, str(status[0])).inc()
            self.metrics.latency.labels(party, endpoint).observe(time.perf_counter() - started)


def instrument(app: Starlette, party: str) -> Starlette:
    """Count and time every request of `app` and serve `GET /metrics` (returns the same app)."""
    endpoints = {getattr(r, "path", "") for r in app.router.routes}
    metrics = Metrics(party, {re.sub(r"\{[^}]+\}", "{id}", e) for e in endpoints})

    async def exposition(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.router.routes.insert(0, Route("/metrics", exposition, methods=["GET"]))
    app.state.metrics = metrics
    app.add_middleware(_Instrumented, metrics=metrics)
    return app


def metrics_of(app: Starlette) -> Metrics:
    metrics: Metrics = app.state.metrics
    return metrics
