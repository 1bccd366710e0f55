"""Aggregates `ServiceHeartbeat` events into the box's health view (service, instance, room)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cinebridge_common.messages import ServiceHeartbeat


@dataclass
class InstanceHealth:
    heartbeat: ServiceHeartbeat
    last_seen: dt.datetime


class HealthBoard:
    """Last heartbeat per (service, instance); state turns `stale`, then `down`, with silence."""

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self._instances: dict[tuple[str, str], InstanceHealth] = {}

    def record(self, hb: ServiceHeartbeat, now: dt.datetime | None = None) -> None:
        seen = now or dt.datetime.now(dt.UTC)
        self._instances[(hb.service, hb.instance)] = InstanceHealth(hb, seen)

    def state_of(self, item: InstanceHealth, now: dt.datetime) -> str:
        age = (now - item.last_seen).total_seconds()
        if item.heartbeat.state == "stopping":
            return "stopped"
        if age > 3 * self.stale_after_s:
            return "down"
        if age > self.stale_after_s:
            return "stale"
        return item.heartbeat.state

    def snapshot(self, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        now = now or dt.datetime.now(dt.UTC)
        rows = []
        for (service, instance), item in sorted(self._instances.items()):
            hb = item.heartbeat
            rows.append(
                {
                    "service": service,
                    "instance": instance,
                    "room": hb.room,
                    "version": hb.version,
                    "state": self.state_of(item, now),
                    "last_seen": item.last_seen,
                    "age_s": round((now - item.last_seen).total_seconds(), 1),
                    "started_at": hb.started_at,
                    "detail": hb.detail,
                    "health_url": hb.health_url,
                }
            )
        return rows

    def overall(self, now: dt.datetime | None = None) -> str:
        states = {row["state"] for row in self.snapshot(now)}
        if not states:
            return "unknown"
        if states <= {"up", "stopped"}:
            return "up"
        return "degraded"

    def rooms(self) -> list[str]:
        """Rooms that have a capture instance reporting (ops dashboard, room picker)."""
        return sorted(
            {
                i.heartbeat.room
                for i in self._instances.values()
                if i.heartbeat.service == "capture" and i.heartbeat.room
            }
        )

    def health_url(self, service: str, instance: str) -> str | None:
        item = self._instances.get((service, instance))
        return item.heartbeat.health_url if item else None
