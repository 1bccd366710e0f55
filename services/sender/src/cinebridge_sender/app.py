"""Composition root of the sender: consumers, RPC, the send queue, and a periodic task for the
Storage Commitment sweep and the queue metrics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cinebridge_common.bus import ConsumerSpec
from cinebridge_common.logging import kv
from cinebridge_common.messages import DeadLetter
from cinebridge_common.service import ServiceContext
from cinebridge_common.supervise import every
from nats.js.errors import NotFoundError
from prometheus_client import Gauge

from . import commitment_handlers, commitment_repository, dead_letters
from . import delivery_repository as deliveries
from . import destination_repository as destinations
from . import queue_repository as qrepo
from .batches import SenderDeps
from .handlers import CONSUMERS, RPC
from .send_queue import DeliveryQueue
from .settings import SenderSettings

log = logging.getLogger(__name__)

QUEUE_DEPTH = Gauge(
    "cinebridge_sender_queue_deliveries", "Deliveries not yet sent", ["destination"]
)
OLDEST_UNSENT = Gauge(
    "cinebridge_sender_oldest_unsent_age_seconds", "Age of the oldest unsent", ["destination"]
)
RETRYING = Gauge(
    "cinebridge_sender_retrying_deliveries", "Deliveries waiting to retry", ["destination"]
)
FAILED = Gauge("cinebridge_sender_failed_deliveries", "Deliveries failed for good", ["destination"])


def consumer_spec(
    stream: str, durable: str, subject: str, settings: SenderSettings
) -> ConsumerSpec:
    # Storage Commitment retries are paced by the database (next_attempt_at), so the redelivery
    # count only has to outlast them; its sweep re-publishes anything that still falls through.
    return ConsumerSpec(
        stream=stream,
        durable=durable,
        filter_subject=subject,
        max_deliver=max(50, settings.sender_max_attempts * 20),
        ack_wait_s=60.0,
        batch=1,
        workers=settings.sender_workers if durable == "sender-commit" else 1,
    )


#: The durable of the per-delivery send job an earlier sender consumed: the queue is the
#: `deliveries` table now, and a durable nobody reads would only count messages pending forever.
RETIRED_DURABLES = (("CB_JOBS", "sender-send"),)


async def drop_retired_durables(ctx: ServiceContext) -> None:
    for stream, durable in RETIRED_DURABLES:
        with contextlib.suppress(NotFoundError):
            await ctx.bus.js.delete_consumer(stream, durable)
            log.info("retired durable deleted", extra=kv(stream=stream, durable=durable))


async def seed_destinations(deps: SenderDeps) -> None:
    for destination in deps.settings.sender_seed_destinations:
        saved = await destinations.upsert_destination(deps.pool, destination)
        log.info("destination seeded", extra=kv(name=saved.name, ae=saved.ae_title))


async def sweep_once(deps: SenderDeps, ctx: ServiceContext, sweep: int) -> None:
    """Storage Commitment's sweep (its own jobs and time-outs), then the queue metrics."""
    await commitment_handlers.sweep(deps, sweep)
    await refresh_metrics(deps, ctx)


def sweeper(deps: SenderDeps, ctx: ServiceContext) -> Callable[[], Awaitable[None]]:
    """The periodic task: any database error of one pass is caught by `every`, which logs it
    once and tries again; it never ends before the service."""
    # Each pass gets a number no earlier pass of any sender process had (milliseconds since
    # the epoch): a re-published commitment job's message id must be new, or the outbox (one
    # row per id) would silently keep the old, already published row.
    sweeps = (time.time_ns() // 1_000_000 + n for n in itertools.count())

    async def loop() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), deps.settings.sender_sweep_interval_s)
        await every(
            "sender-sweeper",
            deps.settings.sender_sweep_interval_s,
            lambda: sweep_once(deps, ctx, next(sweeps)),
            ctx.stop,
        )

    return loop


async def refresh_metrics(deps: SenderDeps, ctx: ServiceContext) -> None:
    total = 0
    for row in await qrepo.queue_stats(deps.pool):
        QUEUE_DEPTH.labels(row["name"]).set(row["depth"])
        OLDEST_UNSENT.labels(row["name"]).set(float(row["oldest_s"]))
        RETRYING.labels(row["name"]).set(row["retrying"])
        FAILED.labels(row["name"]).set(row["failed"])
        total += int(row["depth"])
    ctx.detail["queue_depth"] = str(total)


async def run(settings: SenderSettings) -> None:
    async with ServiceContext("sender", settings) as ctx:
        deps = SenderDeps(ctx.pool, ctx.store, settings, owner=f"sender@{settings.instance_id}")
        await ctx.until_ready("postgres", lambda: seed_destinations(deps))
        await ctx.until_ready("nats", lambda: drop_retired_durables(ctx))
        for stream, durable, model, job_handler in CONSUMERS:
            spec = consumer_spec(stream, durable, model.subject, settings)
            handler: Any = ctx.bind_job(job_handler, deps)
            ctx.bus.start_consumer(spec, model, handler)
        for request_type, rpc_handler in RPC:
            await ctx.until_ready(
                "nats",
                functools.partial(ctx.bus.serve, request_type, ctx.bind_rpc(rpc_handler, deps)),
            )
        replay: Any = functools.partial(dead_letters.replay_dead_letter, deps=deps)
        ctx.bus.start_consumer(dead_letters.DEAD_LETTERS, DeadLetter, replay)
        send_queue = DeliveryQueue(deps, ctx.stop)
        ctx.spawn(send_queue.run, "send-queue")
        ctx.spawn(sweeper(deps, ctx), "sweeper")
        ctx.replay_lost(deliveries.LOST_WORK + commitment_repository.LOST_WORK)
        await ctx.serve_forever()
