"""Composition root of the Storage SCP: service context, index bridge, listeners."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from pathlib import Path

import asyncpg
from cinebridge_common.logging import kv
from cinebridge_common.messages import ConformanceReply, ScpConformance
from cinebridge_common.service import ServiceContext

from . import repository
from .ingest import Indexer, IndexOutcome, Ingest, InstanceFacts
from .listener import ScpListener
from .receive import ReceiveConfig
from .recover import Recovery
from .settings import ScpSettings
from .statement import describe
from .workers import Workers

log = logging.getLogger(__name__)


def temp_dir(store_tmp: Path, instance_id: str) -> Path:
    """This instance's receive directory on the media store's filesystem (renames stay atomic)."""
    name = "scp-" + hashlib.sha256(instance_id.encode()).hexdigest()[:12]
    path = store_tmp / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_stale(path: Path, older_than_s: float = 60.0) -> int:
    """Partial files of a previous run of this instance (crash mid-transfer)."""
    removed = 0
    for entry in path.iterdir():
        if time.time() - entry.stat().st_mtime > older_than_s:
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


async def close_pool(pool: asyncpg.Pool, timeout_s: float = 5.0) -> None:
    """Close gracefully; a connection still held after `timeout_s` is cut."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        pool.terminate()


def index_on_loop(
    loop: asyncio.AbstractEventLoop, pool: asyncpg.Pool, settings: ScpSettings
) -> Indexer:
    """The Indexer for association threads: one statement on the event loop (row and outbox
    event, one round trip), committed without waiting for PostgreSQL's WAL flush
    (repository.open_index_pool: the file is the record, recover.py rebuilds a lost row).
    Waits at most `scp_db_timeout_s`."""

    def index(facts: InstanceFacts) -> IndexOutcome:
        coro = repository.index_instance(pool, facts, settings.scp_duplicates)
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(settings.scp_db_timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    return index


class ScpApp:
    """Runs until stopped; `listener` is set once the DICOM ports are open."""

    def __init__(self, settings: ScpSettings, receive_config: ReceiveConfig | None = None) -> None:
        self.settings = settings
        self.receive_config = receive_config
        self.listener: ScpListener | None = None
        self.ctx: ServiceContext | None = None
        self.workers: Workers | None = None
        self.recovery: Recovery | None = None

    async def run(self) -> None:
        settings = self.settings
        async with ServiceContext("scp", settings) as ctx:
            self.ctx = ctx
            loop = asyncio.get_running_loop()
            dsn = settings.database_url.get_secret_value()
            pool = await repository.open_index_pool(dsn)
            ctx.stack.push_async_callback(close_pool, pool)

            # association thread → event loop (STYLE: one small bridge).
            index = index_on_loop(loop, pool, settings)

            tmp = temp_dir(ctx.store.tmp, settings.instance_id)
            if removed := remove_stale(tmp):
                log.warning("stale partial files removed", extra=kv(count=removed))
            config = self.receive_config or ReceiveConfig(tmp, settings.scp_max_instance_bytes)
            ingest = Ingest(ctx.store, index, settings.scp_max_nesting_depth)
            listener = ScpListener(settings, ingest, config)
            listener.start()
            ctx.stack.callback(listener.stop)
            self.listener = listener

            async def conformance(_: ScpConformance) -> ConformanceReply:
                return describe(settings, listener.ports)

            # Queue group: one answer whatever the number of SCP processes.
            await ctx.bus.serve(ScpConformance, conformance, queue="scp")
            ctx.detail.update(
                {
                    "ae_title": settings.scp_ae_title,
                    "host": settings.advertised_host,
                    "ports": ",".join(map(str, listener.ports)),
                }
            )
            ctx.spawn(lambda: self._report(ctx, listener, ingest), "scp-status")
            if settings.scp_worker_index == 0:  # one sweeper per service, never its workers
                self.recovery = Recovery(
                    ctx.store,
                    pool,
                    settings.scp_duplicates,
                    settings.scp_max_nesting_depth,
                    in_flight_s=settings.scp_db_timeout_s + 60.0,
                )
                ctx.spawn(functools.partial(self._recover, self.recovery), "scp-recover")
            if settings.scp_workers > 1 and settings.scp_worker_index == 0:
                workers = self.workers = Workers(settings)
                ctx.stack.push_async_callback(workers.stop)
                await workers.start()
                ctx.spawn(workers.watch(ctx.stop), "scp-workers")
            await ctx.serve_forever()

    async def _recover(self, recovery: Recovery) -> None:
        """At start over `scp_recover_days`, then today and yesterday every interval."""
        days = self.settings.scp_recover_days
        while True:
            try:
                await recovery.sweep(days)
            except Exception as exc:  # the database may be down: try again next round
                log.warning("recovery sweep failed, will retry", extra=kv(error=repr(exc)[:200]))
            days = 2
            await asyncio.sleep(self.settings.scp_recover_interval_s)

    async def _report(self, ctx: ServiceContext, listener: ScpListener, ingest: Ingest) -> None:
        while True:
            ctx.detail.update(listener.status())
            ctx.detail.update({f"c_store_{k}": str(v) for k, v in ingest.counters.items()})
            if self.recovery is not None:
                ctx.detail.update(
                    {f"recover_{k}": str(v) for k, v in self.recovery.counters.items()}
                )
            await asyncio.sleep(ctx.settings.heartbeat_interval_s)


async def run(settings: ScpSettings) -> None:
    await ScpApp(settings).run()
