"""Prometheus metrics of the gateway (served on the service's /metrics endpoint)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_SECONDS = Histogram(
    "cinebridge_gateway_http_request_duration_seconds",
    "HTTP request handling time by route template and status",
    ("method", "route", "status"),
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
LOGIN_FAILURES = Counter("cinebridge_gateway_login_failures_total", "Refused log-in attempts")
SSE_LISTENERS = Gauge("cinebridge_gateway_sse_clients", "Open server-sent event streams")


class RequestMetrics:
    """Times every request; the label is the route template (`/api/v1/studies/{study_id}`),
    never the concrete path, so ids do not explode the series."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            REQUEST_SECONDS.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


#: The delivery ledger (docs/purge.md): studies per state, refreshed every minute and by
#: `GET /api/v1/ops/purge`, over the latest 1000 studies not purged and every purged one.
LEDGER_STUDIES = Gauge(
    "cinebridge_gateway_ledger_studies",
    "Studies per delivery ledger state (captured, converted, sent, committed, purgeable, purged)",
    ("state",),
)
