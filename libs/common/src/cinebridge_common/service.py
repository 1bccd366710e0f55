"""What every service process does the same way: signals, heartbeat, health, graceful stop.

A service's `app.run(settings)` builds a `ServiceContext`, registers its consumers and servers,
and awaits `ctx.wait_stopped()`. SIGTERM/SIGINT set the stop event; consumers are cancelled (a
message in hand is nak'd and redelivered), the bus is drained, the pool closed, all within
`shutdown_timeout_s` (< 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

import asyncpg

from . import __version__
from .bus import Bus
from .db import create_pool, migrate
from .health import HealthServer
from .logging import kv
from .messages.service import DeadLetter, ServiceHeartbeat, ServiceState
from .outbox import OutboxRelay
from .settings import ServiceSettings
from .station_metrics import StationMetrics
from .store import MediaStore

log = logging.getLogger(__name__)


async def record_dead_letter(pool: asyncpg.Pool, letter: DeadLetter) -> None:
    await pool.execute(
        """INSERT INTO dead_letters (stream, consumer, stream_seq, original_subject, deliveries,
                                     reason, payload)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (stream, consumer, stream_seq) DO UPDATE
             SET reason = EXCLUDED.reason, deliveries = EXCLUDED.deliveries""",
        letter.stream,
        letter.consumer,
        letter.stream_seq,
        letter.original_subject,
        letter.deliveries,
        letter.reason,
        letter.payload,
    )


class ServiceContext:
    """The composition root's shared resources: bus, pool, store, stop event, heartbeat."""

    def __init__(self, service: str, settings: ServiceSettings, *, room: str | None = None) -> None:
        self.service = service
        self.settings = settings
        self.room = room
        self.stop = asyncio.Event()
        self.state: ServiceState = "starting"
        self.detail: dict[str, str] = {}
        self.started_at = dt.datetime.now(dt.UTC)
        self.stack = AsyncExitStack()
        self.bus: Bus
        self.pool: asyncpg.Pool
        self.store = MediaStore(settings.media_root)
        self.health = HealthServer(settings.health_host, settings.health_port, self.status)
        self._background: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> ServiceContext:
        await self.stack.__aenter__()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        self.pool = await create_pool(self.settings.database_url.get_secret_value())
        self.stack.push_async_callback(self._close_pool)
        await migrate(self.pool)
        self.bus = await Bus.connect(
            self.settings.nats_url,
            f"{self.service}@{self.settings.instance_id}",
            dead_letter_sink=lambda letter: record_dead_letter(self.pool, letter),
        )
        self.stack.push_async_callback(self.bus.close)
        await self.bus.ensure_streams()
        await self.health.start()
        self.stack.push_async_callback(self.health.stop)
        self.spawn(self._heartbeat_loop(), "heartbeat")
        self.spawn(OutboxRelay(self.pool, self.bus).run(self.stop), "outbox-relay")
        self.spawn(self._station_metrics().run(self.stop), "station-metrics")
        return self

    async def _close_pool(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), 3)

    async def __aexit__(self, *exc: object) -> None:
        self.state = "stopping"
        with contextlib.suppress(Exception):
            await self.bus.publish_core(self._heartbeat())
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.stack.__aexit__(None, None, None)
        log.info("stopped", extra=kv(service=self.service))

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Run a background task for the life of the service; its crash stops the service."""

        async def guard() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task crashed", extra=kv(task=name))
                self.stop.set()

        task = asyncio.create_task(guard(), name=name)
        self._background.append(task)
        return task

    def _station_metrics(self) -> StationMetrics:
        identity = (self.service, self.settings.instance_id, self.room)
        return StationMetrics(self.pool, self.bus.js, str(self.store.root), identity)

    def status(self) -> dict[str, object]:
        return {
            "service": self.service,
            "instance": self.settings.instance_id,
            "room": self.room,
            "state": self.state,
            "version": __version__,
            "started_at": self.started_at.isoformat(),
            "detail": self.detail,
        }

    def _heartbeat(self) -> ServiceHeartbeat:
        return ServiceHeartbeat(
            service=self.service,
            instance=self.settings.instance_id,
            version=__version__,
            state=self.state,
            room=self.room,
            started_at=self.started_at,
            detail=self.detail,
            health_url=self.health.url,
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            await self.bus.publish_core(self._heartbeat())
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def serve_forever(self) -> None:
        """Mark the service up and wait for SIGTERM/SIGINT."""
        self.state = "up"
        log.info("up", extra=kv(service=self.service, health=self.health.url))
        await self.bus.publish_core(self._heartbeat())
        await self.stop.wait()
        log.info("stopping", extra=kv(service=self.service))


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Door of every service: run `main` and exit non-zero on a startup failure."""
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
