"""/api/health tells the truth without the database: PostgreSQL and NATS as components, the
services that lost one degraded, on a PostgreSQL the test stops and starts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import EmbeddedPostgres
from cinebridge_common.store import MediaStore
from cinebridge_testkit import wait_for
from cinebridge_testkit.browser import CART, ui_page
from playwright.async_api import Page, expect

from .conftest import RunningGateway, gateway_settings, start_gateway
from .test_gateway_ui import FakeRoom, mjpeg_server

pytestmark = pytest.mark.integration

TOKEN = "health-token-for-monitoring-0123456789"


@pytest.fixture
async def own_gateway(
    nats_url: str, tmp_path: Path
) -> AsyncIterator[tuple[RunningGateway, EmbeddedPostgres]]:
    async with gateway_on_own_postgres(nats_url, tmp_path, gateway_auth_cache_s=0.0) as running:
        yield running


@contextlib.asynccontextmanager
async def gateway_on_own_postgres(
    nats_url: str, tmp_path: Path, **extra: Any
) -> AsyncIterator[tuple[RunningGateway, EmbeddedPostgres]]:
    """A gateway on a PostgreSQL of its own, which the test may stop and start."""
    server = EmbeddedPostgres(tmp_path / "pg")
    await asyncio.to_thread(server.start)
    settings = gateway_settings(
        nats_url, server.dsn, tmp_path / "media", gateway_health_token=TOKEN, **extra
    )
    gw, task = await start_gateway(settings)
    try:
        yield gw, server
    finally:
        gw.ctx.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        await asyncio.to_thread(server.stop, "immediate")


async def _health(client: httpx.AsyncClient, **kw: Any) -> dict[str, Any]:
    reply = await client.get("/api/health", **kw)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_health_names_postgres_during_its_outage_without_needing_it(
    own_gateway: tuple[RunningGateway, EmbeddedPostgres],
) -> None:
    gw, server = own_gateway
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with gw.client() as client:
        assert (await client.get("/api/health")).status_code == 401
        bad = await client.get("/api/health", headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401

        async def all_up() -> dict[str, Any] | None:
            body = await _health(client, headers=auth)
            states = {name: c["state"] for name, c in body["components"].items()}
            mine = [i for i in body["instances"] if i["instance"] == "gw-test"]
            ok = (
                states == {"postgres": "up", "nats": "up", "media": "up"}
                and mine
                and mine[0]["state"] == "up"
            )
            return body if ok else None

        await wait_for(all_up, 30, 0.2, what="postgres and nats up")
        session = await gw.login()
        assert (await session.get("/api/v1/ops/summary")).status_code == 200
        await asyncio.to_thread(server.stop, "immediate")

        async def outage_shown() -> dict[str, Any] | None:
            body = await _health(client, headers=auth)
            mine = [i for i in body["instances"] if i["instance"] == "gw-test"]
            shown = (
                body["components"]["postgres"]["state"] == "down"
                and body["components"]["nats"]["state"] == "up"
                and body["status"] == "degraded"
                and mine
                and mine[0]["state"] == "degraded"
                and mine[0]["detail"]["postgres"].startswith("down")
            )
            return body if shown else None

        # The probe runs every second; the generous bound only absorbs a loaded machine.
        await wait_for(outage_shown, 20, 0.2, what="the outage in /api/health")
        # The ops page of a user verified before the outage shows it; what the database
        # holds is null meanwhile.
        summary = await session.get("/api/v1/ops/summary")
        assert summary.status_code == 200, summary.text
        assert summary.json()["health"]["components"]["postgres"]["state"] == "down"
        assert summary.json()["outbox"] is None
        # Someone never verified gets no health from a database that cannot check them.
        async with gw.client() as stranger:
            stranger.cookies.set("cb_session", "not-a-session")
            assert (await stranger.get("/api/v1/ops/summary")).status_code == 503
        # A logged-in call that needs the database says so (503), not an internal error.
        studies = await session.get("/api/v1/studies")
        assert studies.status_code == 503, studies.text
        assert studies.json()["error"]["code"] == "database_unavailable"
        assert not gw.ctx.stop.is_set()

        await asyncio.to_thread(server.start)
        await wait_for(all_up, 60, 0.2, what="postgres back in /api/health")
        assert (await session.get("/api/v1/studies")).status_code == 200
        await session.aclose()


async def test_public_health_by_setting(nats_url: str, database_url: str, tmp_path: Path) -> None:
    gw, task = await start_gateway(
        gateway_settings(nats_url, database_url, tmp_path / "media", gateway_public_health=True)
    )
    try:
        async with gw.client() as client:
            body = await _health(client)
            assert set(body["components"]) == {"postgres", "nats", "media"}
    finally:
        gw.ctx.stop.set()
        await asyncio.wait_for(task, 15)


async def postgres_down(gw: RunningGateway, server: EmbeddedPostgres) -> None:
    """Stop the gateway's PostgreSQL and wait until its health says so (its probe runs every
    second; the bound only absorbs a loaded machine)."""
    await asyncio.to_thread(server.stop, "immediate")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with gw.client() as client:

        async def down() -> bool:
            body = await _health(client, headers=auth)
            return bool(body["components"]["postgres"]["state"] == "down")

        await wait_for(down, 20, 0.2, what="the outage in /api/health")


async def test_a_page_reloaded_during_a_postgres_outage_says_so(
    own_gateway: tuple[RunningGateway, EmbeddedPostgres],
) -> None:
    """Reloaded while PostgreSQL was down, the UI showed the log-in form, as if the session had
    ended (and the log-in then said "database unavailable"). It now says what is down, keeps
    the session, and shows the page by itself once PostgreSQL is back."""
    gw, server = own_gateway
    async with ui_page(gw.url, viewport=CART) as page:
        await page.click("#nav-local")
        await expect(page.locator("#local-form")).to_be_visible()
        await postgres_down(gw, server)
        await page.reload()
        unavailable = page.locator("#page-unavailable")
        await expect(unavailable).to_contain_text("database (PostgreSQL) is not answering")
        await expect(page.locator("#login-form")).to_have_count(0)
        await asyncio.to_thread(server.start)
        await expect(page.locator("#local-form")).to_be_visible(timeout=60_000)
        await expect(unavailable).to_have_count(0)


async def test_the_room_never_shows_no_current_study_for_one_it_cannot_read(
    nats_url: str, peer_bus: Bus, tmp_path: Path
) -> None:
    """The room's capture service names its current study while PostgreSQL is down, but the
    Room, which could not read the study, said "No current study" and offered to start one.
    It now says the database is not answering. (A session checked a moment ago is still known
    without the database: the gateway's principal cache.)"""
    async with (
        mjpeg_server() as preview,
        gateway_on_own_postgres(
            nats_url,
            tmp_path,
            gateway_auth_cache_s=600.0,
            gateway_preview_upstreams={"or1": preview},
        ) as (gw, server),
    ):
        room = FakeRoom(peer_bus, gw.ctx.pool, MediaStore(gw.settings.media_root))
        await room.start()
        study = uuid.uuid4()
        await gw.ctx.pool.execute(
            """INSERT INTO studies (id, study_instance_uid, origin, patient_name, patient_id)
               VALUES ($1, '2.25.' || $2, 'form', 'DOE^JANE', 'PID-1')""",
            study,
            str(study.int),
        )
        room.study_id = str(study)
        async with ui_page(gw.url, viewport=CART) as page:
            await expect(page.locator("#study-patient")).to_have_text("DOE, JANE")
            await postgres_down(gw, server)
            await page.reload()
            await room_says_the_database_is_down(page)


async def room_says_the_database_is_down(page: Page) -> None:
    unavailable = page.locator("#page-unavailable")
    await expect(unavailable).to_contain_text("database (PostgreSQL) is not answering")
    await expect(page.locator("#study-card")).to_have_count(0)


def _postgres_processes(server: EmbeddedPostgres) -> list[int]:
    """The postmaster and its children (the sessions' backends, the WAL writer…)."""
    postmaster = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The parent pid is the field after the state, after the ")" ending the name.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
    return [postmaster, *children]


@contextlib.contextmanager
def postgres_frozen(server: EmbeddedPostgres) -> Iterator[None]:
    """PostgreSQL hung rather than down (SIGSTOP: a stalled disk, a frozen VM): connections
    are accepted by the kernel and statements sent, but nothing answers."""
    processes = _postgres_processes(server)
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def test_a_hung_postgres_gets_a_503_that_says_so_not_a_request_that_waits(
    nats_url: str, tmp_path: Path
) -> None:
    """With PostgreSQL hung, every page stayed on "Loading…" for the whole outage: the session
    check and the page's own statements waited for an answer that never came. Each now fails
    after CB_GATEWAY_DB_TIMEOUT_S with a 503 naming the cause, and works again once
    PostgreSQL answers."""
    extra = {"gateway_auth_cache_s": 600.0, "gateway_db_timeout_s": 2.0}
    async with gateway_on_own_postgres(nats_url, tmp_path, **extra) as (gw, server):
        known = await gw.login()
        assert (await known.get("/api/v1/studies")).status_code == 200
        async with gw.client() as stranger:
            stranger.cookies.set("cb_session", "not-a-session")
            with postgres_frozen(server):
                # A user whose session is cached: the page's own statement times out.
                studies = await known.get("/api/v1/studies")
                assert studies.status_code == 503, studies.text
                assert studies.json()["error"]["code"] == "timed_out"
                assert "PostgreSQL" in studies.json()["error"]["message"]
                # A session that must be looked up: who the caller is cannot be checked.
                looked_up = await stranger.get("/api/v1/studies")
                assert looked_up.status_code == 503, looked_up.text
                assert looked_up.json()["error"]["code"] == "database_unavailable"
                assert "did not answer within 2 s" in looked_up.json()["error"]["message"]
                assert not gw.ctx.stop.is_set()

        async def answered() -> bool:
            return (await known.get("/api/v1/studies")).status_code == 200

        await wait_for(answered, 60, 0.5, what="the studies once PostgreSQL answers")
        await known.aclose()
