"""Composition root of the worklist service: context, seeded servers, RPC subscriptions."""

from __future__ import annotations

import asyncio
import logging

from cinebridge_common.logging import kv
from cinebridge_common.service import ServiceContext

from .handlers import RPC_HANDLERS
from .lookup import Deps, echo_server
from .repository import WorklistRepository
from .settings import WorklistSettings

log = logging.getLogger(__name__)

#: Queue group shared by every instance: each request is answered once (DESIGN "Beyond one box").
QUEUE = "worklist"


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
            self.deps = Deps(pool=ctx.pool, repo=repo, settings=settings, detail=ctx.detail)
            ctx.detail["servers"] = ",".join(s.id for s in servers)
            for request_type, handler, concurrency in RPC_HANDLERS:
                await ctx.bus.serve(
                    request_type,
                    ctx.bind_rpc(handler, self.deps),
                    queue=QUEUE,
                    concurrency=concurrency,
                )
            self.ready.set()
            ctx.spawn(self._echo_servers(ctx), "worklist-echo")
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
