"""Prometheus metrics of the worklist service (served on the service's /metrics endpoint)."""

from __future__ import annotations

import datetime as dt

from cinebridge_common.messages import WorklistQueryReply
from prometheus_client import Counter, Gauge, Histogram

QUERIES = Counter(
    "cinebridge_worklist_queries_total",
    "Worklist queries by server ('all' when every enabled server was asked) and outcome "
    "(complete, partial, too_many, timeout, unreachable, failed; cached: cache offered)",
    ("server", "outcome"),
)
QUERY_SECONDS = Histogram(
    "cinebridge_worklist_query_duration_seconds",
    "Worklist query request to reply, C-FIND and cache included",
    ("server",),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ENTRIES = Histogram(
    "cinebridge_worklist_query_entries",
    "Worklist entries returned per query",
    ("server",),
    buckets=(0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
)
CACHE_AGE = Gauge(
    "cinebridge_worklist_cache_age_seconds",
    "Age of the entries of the last reply per server (0 when live, fetch age when cached)",
    ("server",),
)


def outcome_of(reply: WorklistQueryReply) -> str:
    if reply.cached:
        return "cached"
    return reply.outcome or ("complete" if reply.ok else "failed")


def observe_query(reply: WorklistQueryReply, seconds: float) -> None:
    """Count one answered query (called by the query handler with its wall time)."""
    server = reply.server_id or "all"
    QUERIES.labels(server, outcome_of(reply)).inc()
    QUERY_SECONDS.labels(server).observe(seconds)
    ENTRIES.labels(server).observe(len(reply.items))
    if reply.cached and reply.cached_at is not None:
        age = (dt.datetime.now(dt.UTC) - reply.cached_at).total_seconds()
        CACHE_AGE.labels(server).set(max(0.0, age))
    elif reply.ok:
        CACHE_AGE.labels(server).set(0)


MPPS_REQUESTS = Counter(
    "cinebridge_worklist_mpps_requests_total",
    "MPPS requests (operation create = N-CREATE, set = N-SET) by outcome: done, warning, "
    "retry (transient failure or no answer), failed (permanent, shown with its error)",
    ("server", "operation", "outcome"),
)
MPPS_STEPS = Gauge(
    "cinebridge_worklist_mpps_steps",
    "Performed procedure steps by state (pending-create, in-progress, pending-set, completed, "
    "discontinued, failed-retrying, failed)",
    ("state",),
)
