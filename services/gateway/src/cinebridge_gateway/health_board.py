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
    #: Runs of the process seen to start again while this gateway watched (a new `started_at`),
    #: when the last one did, and how the run before it ended: `stopped` when it said so
    #: (its last heartbeat was `stopping`), else `ended unexpectedly` (killed, crashed).
    restarts: int = 0
    restarted_at: dt.datetime | None = None
    previous_end: str | None = None


class HealthBoard:
    """Last heartbeat per (service, instance, room); state turns `stale`, then `down`, with
    silence; a process started again (supervisor, container restart) is counted, with how its
    previous run ended, so that health shows a crash the restart hid."""

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        # Keyed with the room too: capture processes of several rooms may share an instance
        # id (one host), and their runs must not be taken for restarts of each other.
        self._instances: dict[tuple[str, str, str], InstanceHealth] = {}

    def record(self, hb: ServiceHeartbeat, now: dt.datetime | None = None) -> None:
        seen = now or dt.datetime.now(dt.UTC)
        key = (hb.service, hb.instance, hb.room or "")
        item = InstanceHealth(hb, seen)
        before = self._instances.get(key)
        if before is not None:
            if hb.started_at < before.heartbeat.started_at:
                return  # a late beat of the previous run
            item.restarts, item.restarted_at = before.restarts, before.restarted_at
            item.previous_end = before.previous_end
            if hb.started_at > before.heartbeat.started_at:
                item.restarts += 1
                item.restarted_at = hb.started_at
                ended = before.heartbeat.state == "stopping"
                item.previous_end = "stopped" if ended else "ended unexpectedly"
        self._instances[key] = item

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
        for (service, instance, _room), item in sorted(self._instances.items()):
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
                    "restarts": item.restarts,
                    "restarted_at": item.restarted_at,
                    "previous_end": item.previous_end,
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
        for (name, of, _room), item in sorted(self._instances.items()):
            if (name, of) == (service, instance):
                return item.heartbeat.health_url
        return None
