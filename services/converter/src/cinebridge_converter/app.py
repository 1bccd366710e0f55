"""Composition root of the converter: the convert-job consumer, the dead-letter parking and the
reconciler on a ServiceContext."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from cinebridge_common.bus import DLQ, JOBS, ConsumerSpec
from cinebridge_common.messages import ConformanceReply, ConverterConformance, DeadLetter
from cinebridge_common.service import ServiceContext
from cinebridge_common.station import load_station_settings
from cinebridge_common.supervise import every

from . import purge_repository, reconcile, statement
from . import repository as repo
from .handlers import CONSUMERS, RPC
from .jobs import ConverterDeps
from .settings import ConverterSettings

#: Dead letters of job consumers: the converter's own are parked for its reconciler. It never
#: gives up (the DLQ stream keeps the letter meanwhile).
DEAD_LETTERS = ConsumerSpec(
    stream=DLQ.name,
    durable="converter-dead-letters",
    filter_subject=f"cb.dlq.{JOBS.name}",
    max_deliver=100_000,
    backoff_s=(1.0, 2.0, 5.0, 10.0, 30.0),
)


def consumer_spec(durable: str, subject: str, settings: ConverterSettings) -> ConsumerSpec:
    # batch=1: a conversion may take minutes; fetching more would hold other jobs hostage
    # behind it while their ack wait runs out.
    return ConsumerSpec(
        stream=JOBS.name,
        durable=durable,
        filter_subject=subject,
        max_deliver=settings.converter_max_deliver,
        ack_wait_s=settings.converter_ack_wait_s,
        backoff_s=(2.0, 10.0, 30.0, 60.0),
        batch=1,
        workers=settings.converter_workers,
    )


async def run(settings: ConverterSettings) -> None:
    async with ServiceContext("converter", settings) as ctx:
        deps = ConverterDeps(ctx.pool, ctx.store, ctx.bus, settings)
        for durable, model, handler in CONSUMERS:
            bound: Any = ctx.bind_job(handler, deps)
            ctx.bus.start_consumer(consumer_spec(durable, model.subject, settings), model, bound)
        for request_type, rpc_handler in RPC:
            answer = ctx.bind_rpc(rpc_handler, deps)
            await ctx.until_ready(
                "nats",
                functools.partial(
                    ctx.bus.serve, request_type, answer, concurrency=settings.converter_workers
                ),
            )
        dead_letters = functools.partial(reconcile.park_dead_letter, deps=deps)
        ctx.bus.start_consumer(DEAD_LETTERS, DeadLetter, dead_letters)
        ctx.spawn(
            lambda: every(
                "converter-reconciler",
                settings.converter_reconcile_interval_s,
                lambda: reconcile.reconcile_once(deps),
                ctx.stop,
            ),
            "reconciler",
        )

        async def conformance(_: ConverterConformance) -> ConformanceReply:
            configured = await load_station_settings(ctx.pool)
            return await asyncio.to_thread(statement.describe, configured, settings)

        await ctx.until_ready(
            "nats",
            functools.partial(ctx.bus.serve, ConverterConformance, conformance, queue="converter"),
        )
        ctx.replay_lost(repo.LOST_WORK + purge_repository.LOST_WORK)
        ctx.detail["workers"] = str(settings.converter_workers)
        ctx.spawn(_cancel_on_stop(ctx, deps), "cancel-on-stop")
        await ctx.serve_forever()


async def _cancel_on_stop(ctx: ServiceContext, deps: ConverterDeps) -> None:
    """A conversion thread stops at its next packet when the service stops (job is redelivered)."""
    try:
        await ctx.stop.wait()
    finally:
        deps.cancel.set()  # also when the service task itself is cancelled
