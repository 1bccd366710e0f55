"""The web UI in headless Chromium (Debian's package, driven by Playwright): one way for every
browser test to open it, log in, set up its room (a real capture service, or a heartbeat for a
peer that plays one) and start a study there."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import ServiceHeartbeat
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect

from . import require_tool, stop_process, wait_for

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--mute-audio",
]
#: The first administrator's password the test gateways are started with.
ADMIN_PASSWORD = "admin-Password-1"  # noqa: S105 - a test station's, set in its settings
VIEWPORT = ViewportSize(width=1280, height=900)
#: A cart's screen.
CART = ViewportSize(width=1366, height=768)
#: How long a log-in may take on a loaded machine (the page's first API calls and its events).
LOG_IN_MS = 30_000


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium for the block (missing: the test fails under CI, see require_tool)."""
    path = require_tool("chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def log_in(
    page: Page, url: str, user: str = "admin", password: str = ADMIN_PASSWORD, at: str = ""
) -> None:
    """Open the UI at `at` (e.g. `#/worklist`) and log in with its form; returns once the page
    knows who is logged in and its live events are connected."""
    await page.goto(f"{url}/{at}")
    await expect(page.locator("#login-form")).to_be_visible(timeout=LOG_IN_MS)
    await expect(page.locator("#topbar")).to_be_hidden()  # no navigation before the log-in
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", password)
    await page.click("#login-button")
    await expect(page.locator("#whoami")).to_contain_text(f"{user} (", timeout=LOG_IN_MS)
    await expect(page.locator("#live")).to_have_text("live", timeout=LOG_IN_MS)


@asynccontextmanager
async def ui_page(
    url: str,
    user: str | None = "admin",
    password: str = ADMIN_PASSWORD,
    *,
    at: str = "",
    viewport: ViewportSize = VIEWPORT,
) -> AsyncIterator[Page]:
    """A page of the UI in its own Chromium, logged in as `user` (None: at the log-in form)."""
    async with chromium() as browser:
        page = await browser.new_page(viewport=viewport)
        if user is None:
            await page.goto(f"{url}/{at}")
        else:
            await log_in(page, url, user, password, at)
        yield page


async def start_unscheduled_study(page: Page) -> None:
    """In the Room: New study → Start unscheduled, and wait until the study card shows it."""
    await page.click("#new-study")
    await page.click("#start-unscheduled")
    badge = page.locator("#study-card .badge", has_text="unscheduled")
    await expect(badge).to_be_visible(timeout=LOG_IN_MS)


def capture_heartbeat(room: str = "or1") -> ServiceHeartbeat:
    """The heartbeat of a room's capture service (instance `cap-<room>`), up since now."""
    return ServiceHeartbeat(
        service="capture",
        instance=f"cap-{room}",
        version="1",
        state="up",
        room=room,
        started_at=dt.datetime.now(dt.UTC),
    )


async def announce_room(bus: Bus, api: httpx.AsyncClient, room: str = "or1") -> None:
    """Say that the room's capture service is up (its heartbeat), as a capture process would,
    and wait until the gateway lists the room (the Room page shows the rooms it lists)."""
    await bus.publish_core(capture_heartbeat(room))
    await bus.nc.flush()

    async def listed() -> bool:
        rooms = (await api.get("/api/v1/rooms")).json()
        return any(r["room"] == room for r in rooms)

    await wait_for(listed, 30, what=f"room {room} listed by the gateway")


#: A small test pattern: cheap enough for a loaded machine, a picture within seconds.
TEST_PATTERN = "lavfi:testsrc2=size=320x240:rate=10"


def start_capture(
    env: dict[str, str], log: Path, *, preview_port: int, room: str = "or1", source: str = "endo"
) -> subprocess.Popen[bytes]:
    """The capture service of `room` as a process of its own, one test-pattern source, its
    preview on `preview_port`; `env` holds the station's `CB_NATS_URL`, `CB_DATABASE_URL` and
    `CB_MEDIA_ROOT`, and may add to or override the rest."""
    settings = {
        "CB_INSTANCE_ID": f"capture-{room}",
        "CB_HEALTH_PORT": str(free_port()),
        "CB_HEARTBEAT_INTERVAL_S": "1",
        "CB_CAPTURE_ROOM": room,
        "CB_CAPTURE_SOURCES": json.dumps([{"name": source, "url": TEST_PATTERN}]),
        "CB_CAPTURE_PREVIEW_PORT": str(preview_port),
        "CB_CAPTURE_DISK_RESERVE_BYTES": "0",
        "CB_LOG_LEVEL": "INFO",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cinebridge_capture"],
            env={**os.environ, **settings, **env},
            stdout=out,
            stderr=out,
        )


def log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


@asynccontextmanager
async def capture_room(
    api: httpx.AsyncClient,
    env: dict[str, str],
    log: Path,
    *,
    preview_port: int,
    room: str = "or1",
    up_s: float = 120.0,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`start_capture`'s process from the moment the gateway (`api`, logged in) reaches it with
    a picture until the block ends; the log's tail is printed when the block fails."""
    proc = start_capture(env, log, preview_port=preview_port, room=room)
    try:

        async def up() -> bool:
            assert proc.poll() is None, log_tail(log)
            status = (await api.get(f"/api/v1/rooms/{room}")).json()
            return bool(status.get("reachable")) and status["sources"][0]["signal"]

        await wait_for(up, up_s, interval_s=0.5, what=f"capture of {room} with a picture")
        yield proc
    except BaseException:
        print(log_tail(log))
        raise
    finally:
        await asyncio.to_thread(stop_process, proc, 20)
