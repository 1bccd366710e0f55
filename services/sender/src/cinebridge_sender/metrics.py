"""Prometheus counters of the sender's delivery attempts (the queue gauges live in app.py)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ATTEMPTS = Counter(
    "cinebridge_sender_delivery_attempts_total",
    "Delivery attempts by destination and the state they left the delivery in",
    ("destination", "state"),
)
STATUSES = Counter(
    "cinebridge_sender_cstore_responses_total",
    "C-STORE-RSP status codes by destination (hex, PS3.4 B.2.3; 'none' when no response came)",
    ("destination", "status"),
)
ASSOCIATION_FAILURES = Counter(
    "cinebridge_sender_association_failures_total",
    "Associations to a destination that could not be established or broke",
    ("destination",),
)
SEND_SECONDS = Histogram(
    "cinebridge_sender_instance_send_duration_seconds",
    "C-STORE of one instance, request to response",
    ("destination",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def record_attempt(
    destination: str, state: str, status: int | None, started: float, finished: float
) -> None:
    ATTEMPTS.labels(destination, state).inc()
    STATUSES.labels(destination, "none" if status is None else f"{status:04X}").inc()
    if status is not None:
        SEND_SECONDS.labels(destination).observe(max(0.0, finished - started))
