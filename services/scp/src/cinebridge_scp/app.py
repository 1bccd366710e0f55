"""Composition root of the Storage SCP: service context, index bridge, listeners."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from cinebridge_common import commitment as sc
from cinebridge_common.bus import Bus
from cinebridge_common.logging import kv
from cinebridge_common.messages import (
    CommitmentReported,
    CommittedReference,
    ConformanceReply,
    ScpConformance,
)
from cinebridge_common.service import ServiceContext

from . import repository
from .commitment import CommitmentService, ReportTo
from .group_index import GroupIndexer
from .ingest import Ingest
from .listener import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, ScpListener
from .receive import ReceiveConfig, SpareFiles
from .recover import Recovery
from .reports import ReportSender
from .settings import ScpSettings
from .statement import describe
from .workers import Workers

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """Run `coro` on the event loop from an association thread and wait at most `timeout_s`
    (STYLE: one small bridge); a time-out cancels it."""
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout_s)
    except TimeoutError:
        future.cancel()
        raise


def commitment_on_loop(
    loop: asyncio.AbstractEventLoop,
    pool: asyncpg.Pool,
    bus: Bus,
    settings: ScpSettings,
    reports: ReportSender,
) -> CommitmentService:
    """Storage Commitment for association threads: index lookups, report publishing and the
    reports owed on a new association run on the event loop, each bounded (STYLE: one small
    bridge)."""

    def lookup(uids: Sequence[str]) -> dict[str, str]:
        return on_loop(loop, repository.stored_classes(pool, uids), settings.scp_db_timeout_s)

    def publish(report: sc.Report, calling_ae: str) -> bool:
        event = CommitmentReported(
            transaction_uid=report.transaction_uid,
            calling_ae=calling_ae,
            references=[
                CommittedReference(
                    sop_class_uid=r.sop_class_uid, sop_instance_uid=r.sop_instance_uid
                )
                for r in report.committed
            ]
            + [
                CommittedReference(
                    sop_class_uid=f.sop_class_uid,
                    sop_instance_uid=f.sop_instance_uid,
                    failure_reason=f.reason,
                )
                for f in report.failed
            ],
        )
        # The same report sent twice is one message (JetStream de-duplicates by Nats-Msg-Id).
        digest = hashlib.sha256(event.model_dump_json(exclude={"occurred_at"}).encode()).hexdigest()
        msg_id = f"commitment-{digest[:32]}"
        future = asyncio.run_coroutine_threadsafe(bus.publish(event, msg_id=msg_id), loop)
        try:
            future.result(settings.scp_commitment_publish_timeout_s)
        except Exception as exc:
            future.cancel()
            log.warning("commitment report not stored", extra=kv(error=repr(exc)[:200]))
            return False
        return True

    def owe(to: ReportTo, report: sc.Report) -> int:
        hold = settings.scp_commitment_report_hold_s
        coro = repository.owe_report(pool, to, report, hold)
        return on_loop(loop, coro, settings.scp_db_timeout_s)

    async def make_due(report_id: int) -> None:
        try:
            await repository.report_due(pool, report_id)
        except (OSError, asyncpg.PostgresError) as exc:  # due after its hold all the same
            log.warning("commitment report not made due", extra=kv(error=repr(exc)[:200]))
        reports.wake.set()

    def due(report_id: int) -> None:
        asyncio.run_coroutine_threadsafe(make_due(report_id), loop)

    return CommitmentService(
        lookup,
        publish,
        settings.scp_commitment_peers,
        settings.scp_ae_title,
        (IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME),
        owe,
        due,
    )


class ScpApp:
    """Runs until stopped; `listener` is set once the DICOM ports are open."""

    def __init__(self, settings: ScpSettings, receive_config: ReceiveConfig | None = None) -> None:
        self.settings = settings
        self.receive_config = receive_config
        self.listener: ScpListener | None = None
        self.ctx: ServiceContext | None = None
        self.workers: Workers | None = None
        self.recovery: Recovery | None = None
        self.reports: ReportSender | None = None
        #: The empty receive files made ahead (none with a `receive_config` of the caller's).
        self.spares: SpareFiles | None = None

    async def run(self) -> None:
        settings = self.settings
        async with ServiceContext("scp", settings) as ctx:
            self.ctx = ctx
            loop = asyncio.get_running_loop()
            dsn = settings.database_url.get_secret_value()
            pool = await repository.open_index_pool(dsn)
            ctx.stack.push_async_callback(close_pool, pool)

            # association threads → event loop (STYLE: one small bridge): rows of instances
            # ready at the same moment commit together, each after its own file's fsyncs.
            index = GroupIndexer(loop, pool, settings.scp_duplicates, settings.scp_db_timeout_s)
            ctx.spawn(index.run, "scp-index")

            tmp = temp_dir(ctx.store.tmp, settings.instance_id)
            if removed := remove_stale(tmp):
                log.warning("stale partial files removed", extra=kv(count=removed))
            config = self.receive_config
            if config is None:
                spares = self.spares = SpareFiles(tmp)
                ctx.stack.callback(spares.close)
                config = ReceiveConfig(tmp, settings.scp_max_instance_bytes, spares=spares)
            ingest = Ingest(ctx.store, index, settings.scp_max_nesting_depth)
            reports = self.reports = ReportSender(pool, settings)
            commitment = commitment_on_loop(loop, pool, ctx.bus, settings, reports)
            listener = ScpListener(settings, ingest, config, commitment)
            listener.start()
            ctx.stack.callback(listener.stop)
            index.associations = listener.active_associations
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
            ctx.spawn(reports.run, "scp-commitment-reports")
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
            if self.reports is not None:
                ctx.detail["commitment_reports_owed"] = str(self.reports.owed)
            if self.recovery is not None:
                ctx.detail.update(
                    {f"recover_{k}": str(v) for k, v in self.recovery.counters.items()}
                )
            await asyncio.sleep(ctx.settings.heartbeat_interval_s)


async def run(settings: ScpSettings) -> None:
    await ScpApp(settings).run()
