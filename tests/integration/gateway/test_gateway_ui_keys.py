"""The Room's keyboard and roles in headless Chromium (a real gateway; the capture service
played by the FakeRoom peer): the pedal keys act only as plain keys on the Room page with no
dialog open (Ctrl+R stays the browser's reload, never a recording), a viewer sees no control
that changes something and its keys send nothing, and a session that ended brings the operator
back to the page they were on after logging in again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.store import MediaStore
from cinebridge_testkit import require_tool
from playwright.async_api import Page, async_playwright, expect

from .conftest import ADMIN_PASSWORD, RunningGateway
from .test_gateway_ui import CHROMIUM_ARGS, FakeRoom, mjpeg_server, serve_peers

pytestmark = pytest.mark.integration

VIEWER_PASSWORD = "Viewer-Password-9"


async def test_keys_roles_and_a_lapsed_session_in_the_browser(
    gateway_factory: Any, peer_bus: Bus
) -> None:
    chromium = require_tool("chromium")
    async with mjpeg_server() as preview:
        gw = await gateway_factory(gateway_preview_upstreams={"or1": preview})
        room = FakeRoom(peer_bus, gw.ctx.pool, MediaStore(gw.settings.media_root))
        await room.start()
        await serve_peers(peer_bus)
        await make_viewer(gw)
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = await browser.new_page(viewport={"width": 1366, "height": 768})
                await operator_keys(page, gw, room)
                await lapsed_session(page)
                viewer = await browser.new_page(viewport={"width": 1366, "height": 768})
                await viewer_sees_no_controls(viewer, gw, room)
                await browser.close()
        finally:
            for running, task in gateway_factory.running:
                running.ctx.stop.set()
                await asyncio.wait_for(task, 15)


async def make_viewer(gw: RunningGateway) -> None:
    admin = await gw.login()
    made = await admin.post(
        "/api/v1/users", json={"username": "watcher", "password": "one-time-99", "role": "viewer"}
    )
    assert made.status_code in (200, 201), made.text
    await admin.aclose()
    viewer = await gw.login("watcher", "one-time-99")
    changed = await viewer.post(
        "/api/v1/auth/password",
        json={"current_password": "one-time-99", "new_password": VIEWER_PASSWORD},
    )
    assert changed.status_code in (200, 204), changed.text
    await viewer.aclose()


async def log_in(page: Page, gw: RunningGateway, user: str, password: str) -> None:
    await page.goto(gw.url)
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", password)
    await page.click("#login-button")
    await expect(page.locator("#live")).to_have_text("live", timeout=10_000)


async def operator_keys(page: Page, gw: RunningGateway, room: FakeRoom) -> None:
    await log_in(page, gw, "admin", ADMIN_PASSWORD)
    await page.click("#new-study")
    await page.click("#start-unscheduled")
    await expect(page.locator("#study-card .badge", has_text="unscheduled")).to_be_visible()
    # Browser shortcuts are not pedal keys: nothing is captured, nothing recorded.
    for shortcut in ("Control+r", "Control+s", "Alt+s", "Meta+r"):
        await page.keyboard.press(shortcut)
    await expect(page.locator("#study-card")).to_be_visible()
    # A dialog open: its form has the keyboard, the room does not capture behind it.
    await page.click("#forward-button")
    await expect(page.locator("#forward-dialog")).to_be_visible()
    await page.keyboard.press("s")
    await page.keyboard.press("r")
    await page.keyboard.press("Escape")
    await expect(page.locator("#forward-dialog")).to_have_count(0)
    # The plain key does capture: the refusals above are not a dead keyboard.
    await page.keyboard.press("s")
    await expect(page.locator("#thumbs .thumb")).to_have_count(1, timeout=10_000)
    assert room.commands == ["snapshot"], room.commands
    await expect(page.locator("#thumbs .thumb button")).to_have_count(1)  # delete, for operators


async def lapsed_session(page: Page) -> None:
    """The session ends (here: its cookie is gone) while the operator is on the Local page."""
    await page.click("#nav-local")
    await expect(page.locator("#local-results tr[data-study]")).to_have_count(1)
    await page.context.clear_cookies()
    await page.click("#local-search")
    await expect(page.locator("#login-form")).to_be_visible()
    await expect(page.locator("#toast")).to_contain_text("Your session has ended: log in again")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", ADMIN_PASSWORD)
    await page.click("#login-button")
    await expect(page.locator("#local-form")).to_be_visible(timeout=10_000)
    assert page.url.endswith("#/local"), page.url


async def viewer_sees_no_controls(page: Page, gw: RunningGateway, room: FakeRoom) -> None:
    await log_in(page, gw, "watcher", VIEWER_PASSWORD)
    await expect(page.locator("#study-card")).to_contain_text("Read-only (viewer role).")
    await expect(page.locator("#thumbs .thumb")).to_have_count(1)
    await expect(page.locator("#thumbs .thumb button")).to_have_count(0)
    await expect(page.locator("[data-action]")).to_have_count(0)
    before = list(room.commands)
    await page.keyboard.press("s")
    await page.keyboard.press("r")
    # The keys were ignored in the page, not refused by the server: no error on screen.
    await page.click("#nav-local")
    await expect(page.locator("#local-results tr[data-study]")).to_have_count(1)
    await expect(page.locator("#local-results button")).to_have_count(0)
    await expect(page.locator("#toast.error")).to_have_count(0)
    assert room.commands == before, room.commands
    await expect(page.locator("#nav-worklist")).to_be_hidden()
    await page.goto(f"{gw.url}/#/worklist")
    await expect(page.locator("#worklist-read-only")).to_be_visible()
