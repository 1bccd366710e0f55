"""Messages every service produces: heartbeats and dead letters."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, Literal

from .base import Event

ServiceState = Literal["starting", "up", "degraded", "stopping"]


class ServiceHeartbeat(Event):
    """A service instance is alive; the gateway's /api/health aggregates these."""

    subject: ClassVar[str] = "cb.evt.service.heartbeat"
    service: str
    instance: str
    version: str
    state: ServiceState
    room: str | None = None
    started_at: dt.datetime
    detail: dict[str, str] = {}
    health_url: str | None = None


class DeadLetter(Event):
    """A durable message was given up after max_deliver or as poison, with the reason."""

    subject: ClassVar[str] = "cb.dlq.{stream}"
    stream: str
    consumer: str
    original_subject: str
    stream_seq: int
    deliveries: int
    reason: str
    payload: str
