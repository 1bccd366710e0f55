"""No conversion is ever dropped: a job nobody holds is re-queued, or failed visibly at last.

A conversion holds a lease on its media (`converter_jobs`), renewed while it works. A lease that
runs out means no converter has the job in hand: the process died, or JetStream gave the job
up (max_deliver reached while PostgreSQL was away; the dead letter parks the job here). The
reconciler then publishes the job again under a new message id, at most
`converter_max_requeues` times; after that the job is recorded failed and ConversionFailed
announced with the last error (the study catalog marks the media), so the study shows it and
Save can ask again. The outcome is the converter's own (`converter_jobs.outcome`): the
catalog's `media.state` follows the events later, and only its `deleted` ends a job here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from cinebridge_common.bus import Delivery, Retry
from cinebridge_common.logging import kv
from cinebridge_common.messages import ConvertMedia, DeadLetter

from . import repository as repo
from .jobs import ConverterDeps

log = logging.getLogger(__name__)

#: The converter's own job consumer, whose dead letters are parked for the reconciler.
CONVERT_DURABLE = "converter-convert"
BATCH = 100


async def reconcile_once(deps: ConverterDeps) -> int:
    """One pass: re-queue or fail every job whose lease ran out; returns how many were."""
    settings = deps.settings
    handled = 0
    async with deps.pool.acquire() as conn, conn.transaction():
        for row in await repo.lapsed_jobs(conn, BATCH):
            handled += 1
            if row["state"] == "deleted":
                await repo.drop_job(conn, row["media_id"])
                continue
            job = ConvertMedia.model_validate(row["job"])
            if row["requeues"] >= settings.converter_max_requeues:
                reason = (
                    f"gave up after {row['requeues']} re-queues: "
                    f"{row['last_error'] or 'no converter finished the job'}"
                )
                await repo.fail_in(conn, job, reason, f"conversion-failed-{job.job_key}")
                log.error("conversion given up", extra=kv(media=job.media_id, reason=reason))
                continue
            await repo.requeue(conn, job, settings.converter_job_lease_s)
            log.warning(
                "stuck conversion re-queued",
                extra=kv(media=job.media_id, state=row["state"], requeues=row["requeues"] + 1),
            )
    return handled


async def park_dead_letter(letter: DeadLetter, _: Delivery, deps: ConverterDeps) -> None:
    """A convert job JetStream gave up on: hand it to the reconciler (waits for PostgreSQL)."""
    if letter.consumer != CONVERT_DURABLE:
        return
    try:
        job = ConvertMedia.from_bytes(letter.payload.encode())
    except ValueError:
        return  # undecodable: the dead letter itself is the record
    try:
        parked = await repo.park_job(deps.pool, job, letter.reason)
    except Exception as exc:
        raise Retry(f"dead-lettered job not parked yet: {type(exc).__name__}") from exc
    if parked:
        log.warning("dead-lettered conversion parked", extra=kv(media=job.media_id))


@contextlib.asynccontextmanager
async def leased(deps: ConverterDeps, media_id: str) -> AsyncIterator[None]:
    """Renew the job's lease while the block runs (a lost renewal only risks a twin job,
    which the deterministic UIDs make harmless)."""
    lease_s = deps.settings.converter_job_lease_s

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            with contextlib.suppress(Exception):
                await repo.renew_lease(deps.pool, media_id, lease_s)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
