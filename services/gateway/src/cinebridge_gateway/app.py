"""Composition root of the gateway: bus subscriptions, admin bootstrap, uvicorn in the same loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import socket
from collections.abc import Callable, Generator

import uvicorn
from cinebridge_common.logging import kv
from cinebridge_common.messages.purge import StudyPurged
from cinebridge_common.service import ServiceContext
from cinebridge_common.supervise import every

from . import purge_audit, purge_repository, routes_purge
from .bootstrap import ensure_admin
from .catalog_repository import open_search_pool
from .conversion_progress import ConversionProgress
from .deps import READ_MODELS, Gateway
from .handlers import subscriptions
from .health_board import HealthBoard
from .hub import EventHub
from .repository import Repository
from .security import PrincipalCache
from .settings import GatewaySettings
from .web import create_app

log = logging.getLogger(__name__)
SESSION_PURGE_S = 600.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: ServiceContext owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind here so a taken port is a clear error (uvicorn would call sys.exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"gateway cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _purge_sessions(repo: Repository, stop: asyncio.Event) -> None:
    await every("session-purge", SESSION_PURGE_S, repo.purge_expired_sessions, stop)


async def _ledger_gauge(ctx: ServiceContext, settings: GatewaySettings) -> None:
    """Studies per ledger state for Prometheus, also while nobody reads the ops page."""

    async def refresh() -> None:
        await routes_purge.ledger_counts(ctx.pool, ctx.bus, settings.gateway_rpc_timeout_s)

    await every("ledger-gauge", routes_purge.LEDGER_REFRESH_S, refresh, ctx.stop)


def freeze_start_up_objects(_ctx: ServiceContext, _url: str) -> None:
    """Once the gateway serves: what start-up built (modules, FastAPI's routes and models,
    pools; ~160,000 objects) lives as long as the process, yet every full collection of the
    cyclic GC walked it all, a pause of the event loop, and so of every request, of tens of
    milliseconds (hundreds on a loaded box: bench/gateway.py's tail). Start-up's garbage is
    collected, then the rest moves to the permanent generation, which collections skip."""
    gc.collect()
    gc.freeze()


async def run(
    settings: GatewaySettings, *, on_started: Callable[[ServiceContext, str], None] | None = None
) -> None:
    """Serve until SIGTERM/SIGINT (or `ctx.stop`); `on_started` gets the context and URL."""
    async with ServiceContext(
        "gateway", settings, db_timeout_s=settings.gateway_db_timeout_s
    ) as ctx:
        search_pool = await open_search_pool(
            settings.database_url.get_secret_value(),
            settings.gateway_search_connections,
            "cinebridge-gateway-search",
            settings.gateway_db_timeout_s,
        )
        ctx.stack.push_async_callback(search_pool.close)
        repo = Repository(ctx.pool, search_pool)
        board = HealthBoard(settings.gateway_stale_after_s)
        hub = EventHub()
        progress = ConversionProgress()
        for subject, handler in subscriptions(board, hub, progress):
            await ctx.until_ready(
                "nats", functools.partial(ctx.bus.subscribe_events, subject, handler)
            )
        await ctx.until_ready("postgres", lambda: ensure_admin(repo, settings))
        audit_purge = ctx.bind_job(purge_audit.handle_study_purged, ctx.pool)
        ctx.bus.start_consumer(purge_audit.SPEC, StudyPurged, audit_purge)
        ctx.replay_lost(purge_repository.LOST_WORK)
        cache = PrincipalCache(settings.gateway_auth_cache_s)
        gw = Gateway(settings, ctx.pool, ctx.bus, ctx.store, repo, board, hub, cache, progress)
        gw.dependencies = ctx.dependencies
        config = uvicorn.Config(
            create_app(gw),
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        sock = listen_socket(settings.gateway_host, settings.gateway_port)
        port = sock.getsockname()[1]
        ctx.watch_read_models(READ_MODELS)
        ctx.spawn(lambda: _purge_sessions(repo, ctx.stop), "session-purge")
        ctx.spawn(lambda: _ledger_gauge(ctx, settings), "ledger-gauge")
        serving = ctx.spawn(server.serve(sockets=[sock]), "http")
        while not server.started:
            if serving.done():
                raise RuntimeError("gateway HTTP server failed to start")
            await asyncio.sleep(0.05)
        ctx.detail["url"] = f"http://{settings.gateway_host}:{port}"
        log.info("listening", extra=kv(url=ctx.detail["url"]))
        if on_started is not None:
            on_started(ctx, ctx.detail["url"])
        try:
            await ctx.serve_forever()
        finally:
            hub.close()
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(serving), settings.shutdown_timeout_s / 2)
