"""Thin handlers: load, delegate, decide ack / retry / poison; subscription table at the bottom."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from cinebridge_common.bus import Delivery, Poison, Retry
from cinebridge_common.logging import kv
from cinebridge_common.messages import ConvertMedia, ExportStudy, ExportStudyReply
from cinebridge_common.messages.base import Job, Request
from cinebridge_common.messages.purge import PurgeStudyFiles
from cinebridge_common.store import UnsafePath

from . import export, jobs, metrics, purge, reconcile
from . import repository as repo
from .errors import Cancelled, ConversionError, TransientFailure

log = logging.getLogger(__name__)


async def handle_convert_media(
    msg: ConvertMedia, delivery: Delivery, deps: jobs.ConverterDeps
) -> None:
    """Convert one media item; a redelivered job finds its committed instances and stops."""
    try:
        job = await jobs.load_job(msg, deps)
        if job.media["state"] == "deleted":
            log.info("media deleted, not converted", extra=kv(media=msg.media_id))
            return
        if await repo.instance_exists(deps.pool, jobs.first_uid(job, deps.settings.org_uid_root)):
            log.info("already converted", extra=kv(media=msg.media_id))
            metrics.CONVERSIONS.labels("duplicate").inc()
            # A re-queued twin of a job that did finish: the reconciler must not try it again.
            await repo.finish_job(deps.pool, uuid.UUID(msg.media_id))
            return
        await repo.start_job(deps.pool, msg, deps.settings.converter_job_lease_s)
        async with delivery.working(), reconcile.leased(deps, msg.media_id):
            with metrics.SECONDS.labels(job.info.kind).time():
                events = await jobs.run_conversion(job, deps)
    except jobs.MissingRows as exc:
        # The rows may still be in flight from capture/gateway; after a few tries it is poison.
        if delivery.attempt < 3:
            raise Retry(str(exc), delay=2.0) from exc
        await jobs.fail(msg, deps, ConversionError(str(exc)))
        raise Poison(str(exc)) from exc
    except (ConversionError, UnsafePath) as exc:
        error = exc if isinstance(exc, ConversionError) else ConversionError(f"bad path: {exc}")
        await jobs.fail(msg, deps, error)
        metrics.failed(exc, retried=False)
        raise Poison(error.reason) from exc
    except (TransientFailure, Cancelled, OSError, asyncpg.PostgresError) as exc:
        await _fail_if_last(msg, delivery, deps, exc)
        metrics.failed(exc, retried=True)
        raise Retry(f"{type(exc).__name__}: {exc}", delay=10.0) from exc
    except Exception as exc:
        await _fail_if_last(msg, delivery, deps, exc)
        raise  # the bus retries with backoff, then dead-letters
    metrics.CONVERSIONS.labels("converted").inc()
    for event in events:
        metrics.INSTANCES.labels(event.sop_class_uid).inc()
    log.info("converted", extra=kv(media=msg.media_id, instances=len(events)))


async def _fail_if_last(
    msg: ConvertMedia, delivery: Delivery, deps: jobs.ConverterDeps, exc: Exception
) -> None:
    """On the last delivery the media must not stay 'converting': record why it failed."""
    if delivery.last_attempt:
        await jobs.fail(msg, deps, ConversionError(f"gave up: {type(exc).__name__}: {exc}"))


async def handle_export_study(req: ExportStudy, deps: jobs.ConverterDeps) -> ExportStudyReply:
    """Write one export; a refusal or a failure is the reply's error (the gateway audits it)."""
    try:
        return await export.run_export(req, deps)
    except (export.ExportRefused, ConversionError, UnsafePath, ValueError) as exc:
        log.info("export refused", extra=kv(export=req.export_id, reason=str(exc)))
        return ExportStudyReply(ok=False, error=str(exc), export_id=req.export_id)


JobHandler = Callable[[Any, Delivery, jobs.ConverterDeps], Awaitable[None]]

#: (durable consumer, message type, handler): the converter's subscriptions.
CONSUMERS: list[tuple[str, type[Job], JobHandler]] = [
    ("converter-convert", ConvertMedia, handle_convert_media),
    ("converter-purge", PurgeStudyFiles, purge.handle_purge_study),
]

RpcHandler = Callable[[Any, jobs.ConverterDeps], Awaitable[Any]]

#: Request/reply subjects the converter answers.
RPC: list[tuple[type[Request], RpcHandler]] = [
    (ExportStudy, handle_export_study),
]
