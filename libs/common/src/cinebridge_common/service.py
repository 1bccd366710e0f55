"""What every service process does the same way: signals, heartbeat, health, graceful stop.

A service's `app.run(settings)` builds a `ServiceContext`, registers its consumers and servers,
and awaits `ctx.serve_forever()`. A service started while PostgreSQL or NATS is away waits for
them (health answers meanwhile, not ready); afterwards a dependency probe keeps `/readyz` and the
heartbeat true, and every background loop runs supervised (restarted with backoff, counted), so
no dependency outage stops the process. SIGTERM/SIGINT set the stop event; consumers are
cancelled (a message in hand is nak'd and redelivered), the bus is drained, the pool closed, all
within `shutdown_timeout_s` (< 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import asyncpg
import nats.errors

from . import __version__
from .bus import DLQ, Bus, BusError, ConsumerSpec, Delivery, Retry
from .db import DB_DOWN, create_pool, migrate
from .health import HealthServer
from .logging import kv
from .messages.base import Message, Reply, Request
from .messages.service import DeadLetter, ServiceHeartbeat, ServiceState
from .outbox import OutboxRelay
from .read_models import missing_read_models, waiting_message
from .replay import LostWork, run_replays
from .settings import ServiceSettings
from .station_metrics import StationMetrics
from .store import MediaStore, temp_owner
from .supervise import cancel_and_wait, every, supervised

log = logging.getLogger(__name__)
T = TypeVar("T")
#: A handler's dependencies, a message, a request and a reply (the binding helpers' types).
D = TypeVar("D")
M = TypeVar("M", bound=Message)
Q = TypeVar("Q", bound=Request)
R = TypeVar("R", bound=Reply)
#: Dependency probes: how often, and how long one may take before it counts as down.
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0
#: How often a service looks again for other owners' read models it still waits for.
READ_MODEL_PROBE_S = 2.0
#: Errors that mean "PostgreSQL or NATS is not reachable (yet)": worth waiting for.
UNREACHABLE: tuple[type[Exception], ...] = (*DB_DOWN, BusError, nats.errors.Error)


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


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived while the service was still waiting for its dependencies."""


#: The dead-letter mirror: every service runs it on one shared durable, so each letter of the
#: JetStream DLQ is copied once into the `dead_letters` table, as soon as PostgreSQL answers.
#: It never gives up (the DLQ stream keeps the letter for 90 days meanwhile).
DEAD_LETTER_MIRROR = ConsumerSpec(
    stream=DLQ.name,
    durable="dead-letter-mirror",
    filter_subject="cb.dlq.>",
    max_deliver=100_000,
    backoff_s=(1.0, 2.0, 5.0, 10.0, 30.0),
    batch=10,
)


def mirror_dead_letters(bus: Bus, pool: asyncpg.Pool) -> list[asyncio.Task[None]]:
    """Copy every DLQ letter into `dead_letters`; while PostgreSQL is away it waits in the
    stream and is retried."""

    async def mirror(letter: DeadLetter, _: Delivery) -> None:
        try:
            await record_dead_letter(pool, letter)
        except Exception as exc:
            raise Retry(f"dead letter not mirrored yet: {type(exc).__name__}") from exc

    return bus.start_consumer(DEAD_LETTER_MIRROR, DeadLetter, mirror)


class ServiceContext:
    """The composition root's shared resources: bus, pool, store, stop event, heartbeat."""

    def __init__(
        self,
        service: str,
        settings: ServiceSettings,
        *,
        room: str | None = None,
        db_timeout_s: float = 60.0,
    ) -> None:
        self.service = service
        #: A database statement with no answer this long raises TimeoutError (create_pool).
        self.db_timeout_s = db_timeout_s
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
        self.dependencies = Dependencies()
        #: Free bytes below which the media store counts as full (from the settings).
        self.media_min_free_bytes = settings.media_min_free_bytes
        self.restarts = [0]
        self._background: list[asyncio.Task[Any]] = []

    @staticmethod
    def bind_rpc(handler: Callable[[Q, D], Awaitable[R]], deps: D) -> Callable[[Q], Awaitable[R]]:
        """A table's `handle_<x>(request, deps)` as the one-argument answer `bus.serve` calls."""

        async def answer(request: Q) -> R:
            return await handler(request, deps)

        return answer

    @staticmethod
    def bind_job(
        handler: Callable[[M, Delivery, D], Awaitable[None]], deps: D
    ) -> Callable[[M, Delivery], Awaitable[None]]:
        """A table's `handle_<x>(msg, delivery, deps)` as the handler `bus.start_consumer`
        calls with the message and its delivery."""

        async def handle(msg: M, delivery: Delivery) -> None:
            await handler(msg, delivery, deps)

        return handle

    async def __aenter__(self) -> ServiceContext:
        await self.stack.__aenter__()
        try:
            await self._open()
        except BaseException:
            await self.stack.__aexit__(None, None, None)
            raise
        return self

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        # Health answers first: while PostgreSQL or NATS is away, /readyz says which.
        await self.health.start()
        self.stack.push_async_callback(self.health.stop)
        # Temporary files in a directory of this service, room and instance: what a killed
        # run of it was writing never got a final name, and is removed now.
        owner = temp_owner(self.service, self.room, self.settings.instance_id)
        removed = await asyncio.to_thread(self.store.claim_temp, owner)
        if removed:
            log.warning("temporary files of a previous run removed", extra=kv(files=removed))
        dsn = self.settings.database_url.get_secret_value()
        # The sessions say which service they serve (pg_stat_activity, the outbox relay's
        # wake-ups: `OutboxRelay.name`).
        session = f"cinebridge-{self.service}"
        self.pool = await self.until_ready(
            "postgres",
            lambda: create_pool(
                dsn,
                timeout_s=2.0,
                application_name=session,
                command_timeout_s=self.db_timeout_s,
            ),
        )
        self.stack.push_async_callback(self._close_pool)
        await self.until_ready("postgres", lambda: migrate(self.pool))
        self.bus = await self.until_ready(
            "nats",
            lambda: Bus.connect(
                self.settings.nats_url, f"{self.service}@{self.settings.instance_id}"
            ),
        )
        self.stack.push_async_callback(self.bus.close)
        await self.until_ready("nats", self.bus.ensure_streams)
        self.spawn(self._heartbeat_loop, "heartbeat")
        self.spawn(self._watch_dependencies, "dependencies")
        relay = OutboxRelay(
            self.pool, self.bus, retention_s=self.settings.outbox_retention_s, name=session
        )
        self.spawn(lambda: relay.run(self.stop), "outbox-relay")
        mirror_dead_letters(self.bus, self.pool)
        station_metrics = self._station_metrics()
        self.spawn(lambda: station_metrics.run(self.stop), "station-metrics")
        self.spawn(self._sweep_temp, "temp-sweep")

    async def _sweep_temp(self) -> None:
        """Temporary files of writers that never ran again, by age (`MediaStore.clean_temp`)."""
        max_age = self.settings.media_temp_max_age_s

        async def sweep() -> None:
            removed = await asyncio.to_thread(self.store.clean_temp, max_age)
            if removed:
                log.warning("stale temporary files removed", extra=kv(files=removed))

        await every("temp-sweep", max(60.0, max_age / 6), sweep, self.stop)

    async def until_ready(self, name: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Retry `attempt` while `name` is unreachable: a service started before its database
        or bus waits for them (not ready, saying which) instead of exiting. Other errors (a bad
        setting, an edited migration) still stop the start."""
        failures = 0
        while True:
            if self.stop.is_set():
                raise StopRequested(f"{self.service} stopped while waiting for {name}")
            try:
                result = await attempt()
            except UNREACHABLE as exc:
                failures += 1
                self.dependencies.mark(name, f"down: {exc}")
                if failures == 1:
                    log.warning("waiting for dependency", extra=kv(dependency=name, error=str(exc)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), min(5.0, 0.5 * failures))
                continue
            self.dependencies.mark(name, "up")
            if failures:
                log.info("dependency ready", extra=kv(dependency=name, waited_tries=failures))
            return result

    async def _close_pool(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), 3)

    async def __aexit__(self, *exc: object) -> None:
        self.state = "stopping"
        with contextlib.suppress(Exception):
            await self.bus.publish_core(self._heartbeat())
        await cancel_and_wait(self._background, f"service {self.service}")
        await self.stack.__aexit__(None, None, None)
        log.info("stopped", extra=kv(service=self.service))

    def spawn(
        self, work: Callable[[], Awaitable[Any]] | Awaitable[Any], name: str
    ) -> asyncio.Task[Any]:
        """Run a background task for the life of the service.

        Given a factory (a callable returning a fresh coroutine), the task is supervised: when
        it fails or ends before the service stops, it is logged once, counted and started again
        with backoff (`supervise.supervised`). Given a coroutine, it runs once (it cannot be
        started twice), and its crash stops the service, for work that cannot be repeated.
        """
        if callable(work):
            factory = work
            task = asyncio.create_task(
                supervised(name, factory, self.stop, restarts=self.restarts), name=name
            )
            self._background.append(task)
            return task
        once = work

        async def guard() -> None:
            try:
                await once
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task crashed", extra=kv(task=name))
                self.stop.set()

        task = asyncio.create_task(guard(), name=name)
        self._background.append(task)
        return task

    def replay_lost(self, rules: Sequence[LostWork]) -> None:
        """Publish again, from the outbox, the messages of `rules` lost with NATS's JetStream
        store whose work did not happen (`cinebridge_common.replay`): at start, when the bus
        reconnected or found a stream missing, and every `replay_interval_s`."""
        self.spawn(
            lambda: run_replays(
                self.pool,
                self.bus.js,
                rules,
                wake=self.bus.streams_restored,
                stop=self.stop,
                interval_s=self.settings.replay_interval_s,
            ),
            "replay-lost",
        )

    def watch_read_models(self, views: list[str]) -> None:
        """Say in the health detail (`read_models`) which of `views` — other owners' read
        models this service reads — do not exist yet, until they all do: on a new station a
        service may start before their owner first ran its migrations (read_models.py). The
        service stays ready; what needs them answers with the same words meanwhile."""

        async def watch() -> None:
            while not self.stop.is_set():
                missing = await missing_read_models(self.pool, views)
                message = waiting_message(missing)
                if self.detail.get("read_models", "") != message:
                    if message:
                        self.detail["read_models"] = message
                        log.warning("waiting for read models", extra=kv(missing=message))
                    else:
                        self.detail.pop("read_models", None)
                        log.info("read models present", extra=kv(views=",".join(views)))
                    self.dependencies.changed.set()
                if not missing:
                    await self.stop.wait()  # relations are not dropped again
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), READ_MODEL_PROBE_S)

        self.spawn(watch, "read-models")

    @property
    def ready(self) -> bool:
        return self.state == "up" and self.dependencies.all_up()

    def _station_metrics(self) -> StationMetrics:
        identity = (self.service, self.settings.instance_id, self.room)
        return StationMetrics(self.pool, self.bus.js, str(self.store.root), identity)

    def status(self) -> dict[str, object]:
        return {
            "service": self.service,
            "instance": self.settings.instance_id,
            "room": self.room,
            "state": self.state,
            "ready": self.ready,
            "dependencies": self.dependencies.snapshot(),
            "restarts": self.restarts[0] + self._consumer_restarts(),
            "version": __version__,
            "started_at": self.started_at.isoformat(),
            "detail": self._detail(),
        }

    def _consumer_restarts(self) -> int:
        bus = getattr(self, "bus", None)
        return bus.consumer_restarts if bus is not None else 0

    def _detail(self) -> dict[str, str]:
        detail = dict(self.detail)
        for name, state in self.dependencies.snapshot().items():
            detail[name] = state
        restarts = self.restarts[0] + self._consumer_restarts()
        if restarts:
            detail["restarts"] = str(restarts)
        return detail

    def _heartbeat(self) -> ServiceHeartbeat:
        state: ServiceState = self.state
        if state == "up" and not self.dependencies.all_up():
            state = "degraded"
        return ServiceHeartbeat(
            service=self.service,
            instance=self.settings.instance_id,
            version=__version__,
            state=state,
            room=self.room,
            started_at=self.started_at,
            detail=self._detail(),
            health_url=self.health.url,
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            await self.bus.publish_core(self._heartbeat())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.dependencies.changed.wait(), self.settings.heartbeat_interval_s
                )
            self.dependencies.changed.clear()

    async def _watch_dependencies(self) -> None:
        """Probe PostgreSQL, NATS and the media store's free space every second; a change is
        heartbeated at once."""
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.pool.fetchval("SELECT 1"), PROBE_TIMEOUT_S)
                self.dependencies.mark("postgres", "up")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.dependencies.mark("postgres", f"down: {type(exc).__name__}")
            nats_up = self.bus.nc.is_connected
            self.dependencies.mark("nats", "up" if nats_up else "down: disconnected")
            self.dependencies.mark("media", await self._media_state())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), PROBE_INTERVAL_S)

    async def _media_state(self) -> str:
        """ "up", or why the media store cannot take more: full (below the configured free
        bytes), or unreadable (a volume gone). A store that does not exist yet is up: it is
        made by its first write."""
        root = self.store.root
        try:
            usage = await asyncio.wait_for(
                asyncio.to_thread(shutil.disk_usage, root if root.exists() else root.parent),
                PROBE_TIMEOUT_S,
            )
        except (OSError, TimeoutError) as exc:
            return f"down: {type(exc).__name__}"
        if usage.free < self.media_min_free_bytes:
            return f"full: {usage.free} bytes free"
        return "up"

    async def serve_forever(self) -> None:
        """Mark the service up and wait for SIGTERM/SIGINT."""
        self.state = "up"
        log.info("up", extra=kv(service=self.service, health=self.health.url))
        await self.bus.publish_core(self._heartbeat())
        await self.stop.wait()
        log.info("stopping", extra=kv(service=self.service))


class Dependencies:
    """The last known state of each dependency ("up" or "down: why"); `changed` wakes the
    heartbeat so an outage reaches the gateway within a probe interval."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {
            "postgres": "starting",
            "nats": "starting",
            "media": "starting",
        }
        self.changed = asyncio.Event()

    def mark(self, name: str, state: str) -> None:
        if self._states.get(name) != state:
            if state != "up" and self._states.get(name) == "up":
                log.warning("dependency lost", extra=kv(dependency=name, state=state))
            elif state == "up" and self._states.get(name, "").startswith("down"):
                log.info("dependency back", extra=kv(dependency=name))
            self._states[name] = state
            self.changed.set()

    def all_up(self) -> bool:
        return all(state == "up" for state in self._states.values())

    def snapshot(self) -> dict[str, str]:
        return dict(self._states)


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Door of every service: run `main` and exit non-zero on a startup failure."""
    try:
        asyncio.run(main())
    except (KeyboardInterrupt, StopRequested):
        pass
