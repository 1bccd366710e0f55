"""Composition root of the worklist service: context, seeded servers, RPC subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

from cinebridge_common.bus import ConsumerSpec
from cinebridge_common.logging import kv
from cinebridge_common.service import ServiceContext
from cinebridge_common.supervise import every

from . import metrics
from . import mpps_queue_repository as mpps_queue
from . import mpps_repository as mpps_repo
from . import mpps_study_repository as mpps_study
from .handlers import CONSUMERS, RPC_HANDLERS
from .lookup import Deps, echo_server
from .repository import WorklistRepository
from .settings import WorklistSettings

log = logging.getLogger(__name__)

#: Queue group shared by every instance: each request is answered once (DESIGN "Beyond one box").
QUEUE = "worklist"


def consumer_spec(stream: str, durable: str, subject: str) -> ConsumerSpec:
    """Events: read from when the consumer is made, redelivered a few times on a database
    hiccup. The MPPS job: paced by the table (next_attempt_at), so its redelivery count only
    has to outlast the attempts; the sweeper queues again whatever still falls through."""
    if stream == "CB_JOBS":
        return ConsumerSpec(stream, durable, subject, max_deliver=1000, ack_wait_s=60.0, batch=1)
    return ConsumerSpec(stream, durable, subject, max_deliver=20, batch=10, deliver_new_only=True)


def mpps_sweeper(deps: Deps, ctx: ServiceContext) -> Callable[[], Awaitable[None]]:
    """Queue again the job of every step owed a request for far longer than any backoff (a
    job lost or dead-lettered, a worker killed holding its lease); refresh the step gauge."""
    settings = deps.settings
    grace = max(settings.worklist_mpps_lease_s, settings.worklist_mpps_backoff_cap_s) * 2
    # Each pass gets a number no earlier pass had: the re-queued job needs a new message id.
    sweeps = (time.time_ns() // 1_000_000 + n for n in itertools.count())

    async def sweep_once() -> None:
        rows = await mpps_queue.overdue(deps.pool, grace)
        if rows:
            await mpps_queue.republish(deps.pool, rows, next(sweeps))
            log.warning("overdue mpps steps re-queued", extra=kv(count=len(rows)))
        counts = await mpps_queue.state_counts(deps.pool)
        for state in mpps_repo.DUE + mpps_repo.FINAL + ("in-progress",):
            metrics.MPPS_STEPS.labels(state).set(counts.get(state, 0))

    async def loop() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), settings.worklist_mpps_sweep_interval_s)
        await every("mpps-sweeper", settings.worklist_mpps_sweep_interval_s, sweep_once, ctx.stop)

    return loop


class WorklistApp:
    """Runs until stopped; `ready` is set once every RPC is subscribed."""

    def __init__(self, settings: WorklistSettings) -> None:
        self.settings = settings
        self.ctx: ServiceContext | None = None
        self.deps: Deps | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        settings = self.settings
        async with ServiceContext("worklist", settings) as ctx:
            self.ctx = ctx
            repo = WorklistRepository(ctx.pool)
            for server in settings.worklist_seed_servers:
                await repo.upsert_server(server, by="seed")
            servers = await repo.list_servers()
            log.info(
                "worklist servers",
                extra=kv(count=len(servers), seeded=len(settings.worklist_seed_servers)),
            )
            self.deps = Deps(
                pool=ctx.pool,
                repo=repo,
                settings=settings,
                detail=ctx.detail,
                owner=f"worklist@{settings.instance_id}",
            )
            ctx.detail["servers"] = ",".join(s.id for s in servers)
            for request_type, handler, concurrency in RPC_HANDLERS:
                await ctx.bus.serve(
                    request_type,
                    ctx.bind_rpc(handler, self.deps),
                    queue=QUEUE,
                    concurrency=concurrency,
                )
            for stream, durable, model, job_handler in CONSUMERS:
                spec = consumer_spec(stream, durable, model.subject)
                # Made before the service says it is ready: an event consumer delivers what is
                # published from its creation on, so an event sent once we are ready is seen.
                await ctx.until_ready("nats", functools.partial(ctx.bus.ensure_consumer, spec))
                ctx.bus.start_consumer(spec, model, ctx.bind_job(job_handler, self.deps))
            ctx.replay_lost(mpps_study.LOST_WORK + mpps_queue.LOST_WORK)
            self.ready.set()
            ctx.spawn(self._echo_servers(ctx), "worklist-echo")
            ctx.spawn(mpps_sweeper(self.deps, ctx), "mpps-sweeper")
            await ctx.serve_forever()

    async def _echo_servers(self, ctx: ServiceContext) -> None:
        """C-ECHO each enabled server once at start: reachability in the heartbeat and the log."""
        assert self.deps is not None
        deps = self.deps
        try:
            servers = await deps.repo.list_servers()
        except Exception as exc:  # the database may be away: a probe never stops the service
            log.warning("worklist echo skipped", extra=kv(error=repr(exc)))
            return
        for server in servers:
            if not server.enabled:
                continue
            try:
                reply = await echo_server(server.id, deps)
            except Exception as exc:  # a probe only: never stop the service for it
                log.warning("worklist echo failed", extra=kv(server=server.id, error=repr(exc)))
                continue
            state = f"ok {reply.rtt_ms} ms" if reply.reachable else "unreachable"
            ctx.detail[f"echo_{server.id}"] = state
            level = logging.INFO if reply.reachable else logging.WARNING
            log.log(
                level,
                "worklist server echo",
                extra=kv(server=server.id, state=state, reason=reply.reason or ""),
            )

    def stop(self) -> None:
        if self.ctx is not None:
            self.ctx.stop.set()


async def run(settings: WorklistSettings) -> None:
    await WorklistApp(settings).run()
