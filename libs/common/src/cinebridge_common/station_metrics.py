"""Station-wide gauges every service exports: outbox backlog, dead letters, bus consumers, disk.

The outbox, the dead-letter table and the JetStream consumers are shared by the station, so
every service process reports the same values; dashboards and alert rules take `max()` over the
scrape targets (deploy/monitoring/). `StationMetrics.run` refreshes them every `interval_s`
for the life of the service (ServiceContext spawns it); a failed refresh keeps the last values
and is retried on the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil

import asyncpg
from nats.js import JetStreamContext
from prometheus_client import Gauge

from . import __version__
from .bus import DEFAULT_STREAMS
from .logging import kv

log = logging.getLogger(__name__)

SERVICE_INFO = Gauge(
    "cinebridge_service_info",
    "1 for every running service process, with its identity",
    ("service", "instance", "room", "version"),
)
OUTBOX_PENDING = Gauge(
    "cinebridge_outbox_pending_messages", "Outbox rows not yet published to the bus (station)"
)
OUTBOX_OLDEST = Gauge(
    "cinebridge_outbox_oldest_pending_age_seconds",
    "Age of the oldest unpublished outbox row (0 when none; station)",
)
DEAD_LETTERS = Gauge(
    "cinebridge_dead_letters", "Messages recorded in the dead-letter table (station)"
)
CONSUMER_PENDING = Gauge(
    "cinebridge_bus_consumer_pending_messages",
    "Messages of a durable consumer's stream not yet delivered to it",
    ("stream", "consumer"),
)
CONSUMER_ACK_PENDING = Gauge(
    "cinebridge_bus_consumer_ack_pending_messages",
    "Messages delivered to a durable consumer and not yet acknowledged",
    ("stream", "consumer"),
)
CONSUMER_REDELIVERED = Gauge(
    "cinebridge_bus_consumer_redelivered_messages",
    "Messages of a durable consumer delivered more than once and still unacknowledged",
    ("stream", "consumer"),
)
MEDIA_FREE = Gauge(
    "cinebridge_media_store_free_bytes", "Free bytes on the media store's filesystem"
)


async def refresh_database(pool: asyncpg.Pool) -> None:
    row = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS pending,
                  (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)
                     FROM outbox WHERE published_at IS NULL) AS oldest_s,
                  (SELECT count(*) FROM dead_letters) AS dead"""
    )
    assert row is not None
    OUTBOX_PENDING.set(row["pending"])
    OUTBOX_OLDEST.set(float(row["oldest_s"]))
    DEAD_LETTERS.set(row["dead"])


async def refresh_consumers(js: JetStreamContext) -> None:
    for spec in DEFAULT_STREAMS:
        for info in await js.consumers_info(spec.name):
            name = info.config.durable_name or info.name
            CONSUMER_PENDING.labels(spec.name, name).set(info.num_pending or 0)
            CONSUMER_ACK_PENDING.labels(spec.name, name).set(info.num_ack_pending or 0)
            CONSUMER_REDELIVERED.labels(spec.name, name).set(info.num_redelivered or 0)


class StationMetrics:
    """Refreshes the station-wide gauges of one service process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        media_root: str,
        identity: tuple[str, str, str | None],
        *,
        interval_s: float = 10.0,
    ) -> None:
        self.pool = pool
        self.js = js
        self.media_root = media_root
        self.interval_s = interval_s
        service, instance, room = identity
        SERVICE_INFO.labels(service, instance, room or "", __version__).set(1)

    async def refresh(self) -> None:
        with contextlib.suppress(OSError):
            usage = await asyncio.to_thread(shutil.disk_usage, self.media_root)
            MEDIA_FREE.set(usage.free)
        try:
            await refresh_database(self.pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("station metrics: database unavailable", extra=kv(error=repr(exc)))
        try:
            await refresh_consumers(self.js)
        except Exception as exc:  # the bus is reconnecting: keep the last values
            log.debug("station metrics: bus unavailable", extra=kv(error=repr(exc)))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
