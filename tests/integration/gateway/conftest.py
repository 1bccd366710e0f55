"""A real gateway (app.run) on a free port against the session NATS and a fresh PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cinebridge_capture.catalog import CATALOG_HANDLERS, QUEUE, CatalogDeps
from cinebridge_common.bus import Bus
from cinebridge_common.db import create_pool
from cinebridge_common.messages.base import Reply
from cinebridge_common.service import ServiceContext
from cinebridge_gateway import app
from cinebridge_gateway.settings import GatewaySettings
from cinebridge_testkit.browser import ADMIN_PASSWORD


@dataclass
class RunningGateway:
    url: str
    ctx: ServiceContext
    settings: GatewaySettings

    def station_env(self) -> dict[str, str]:
        """What a service process started beside this gateway needs to join its station."""
        return {
            "CB_NATS_URL": self.settings.nats_url,
            "CB_DATABASE_URL": self.settings.database_url.get_secret_value(),
            "CB_MEDIA_ROOT": str(self.settings.media_root),
        }

    def client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=15.0, **kw)

    async def login(
        self, username: str = "admin", password: str = ADMIN_PASSWORD
    ) -> httpx.AsyncClient:
        """A client with a session cookie and the CSRF header set, like the web UI."""
        client = self.client()
        reply = await client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert reply.status_code == 200, reply.text
        client.headers["X-CSRF-Token"] = reply.json()["csrf_token"]
        return client


async def start_gateway(settings: GatewaySettings) -> tuple[RunningGateway, asyncio.Task[None]]:
    started: asyncio.Future[RunningGateway] = asyncio.get_running_loop().create_future()

    def on_started(ctx: ServiceContext, url: str) -> None:
        started.set_result(RunningGateway(url, ctx, settings))

    task = asyncio.create_task(app.run(settings, on_started=on_started))
    done, _ = await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the startup error
    assert started in done, "gateway did not start within 30 s"
    return started.result(), task


def gateway_settings(
    nats_url: str, database_url: str, media_root: Path, **extra: Any
) -> GatewaySettings:
    return GatewaySettings(
        nats_url=nats_url,
        database_url=database_url,
        media_root=media_root,
        gateway_port=0,
        gateway_admin_password=ADMIN_PASSWORD,
        heartbeat_interval_s=0.5,
        instance_id="gw-test",
        **extra,
    )


@pytest.fixture
def gateway_factory(nats_url: str, database_url: str, tmp_path: Path) -> Callable[..., Any]:
    async def make(**extra: Any) -> RunningGateway:
        gw, task = await start_gateway(
            gateway_settings(nats_url, database_url, tmp_path / "media", **extra)
        )
        running.append((gw, task))
        return gw

    running: list[tuple[RunningGateway, asyncio.Task[None]]] = []
    make.running = running  # type: ignore[attr-defined]
    return make


@pytest.fixture
async def gateway(gateway_factory: Callable[..., Any]) -> AsyncIterator[RunningGateway]:
    gw = await gateway_factory()
    yield gw
    for running, task in gateway_factory.running:  # type: ignore[attr-defined]
        running.ctx.stop.set()
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def admin(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    client = await gateway.login()
    yield client
    await client.aclose()


@pytest.fixture
async def peer_bus(nats_url: str) -> AsyncIterator[Bus]:
    """A second bus connection that plays the other services (their RPC contracts)."""
    bus = await Bus.connect(nats_url, "test-peer")
    yield bus
    await bus.close()


@pytest.fixture(autouse=True)
async def study_catalog(nats_url: str, database_url: str) -> AsyncIterator[None]:
    """The study catalog's RPCs (`cb.rpc.capture.catalog.*`), answered by capture's own
    handlers against the test's database, as every capture process answers them: capture owns
    `studies` and `media`, and the gateway asks it for every change (docs/architecture.md).
    Tests that run capture processes have them answer too, in the same queue group."""
    bus = await Bus.connect(nats_url, "test-catalog")
    pool = await create_pool(database_url)
    deps = CatalogDeps(pool)
    for request_type, handler in CATALOG_HANDLERS:

        async def serve(req: Any, handler: Any = handler) -> Reply:
            return await handler(req, deps)  # type: ignore[no-any-return]

        await bus.serve(request_type, serve, queue=QUEUE)
    await bus.nc.flush()
    try:
        yield
    finally:
        await bus.close()
        await pool.close()
