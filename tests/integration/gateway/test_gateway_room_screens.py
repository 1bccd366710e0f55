"""The Room at the cart, in headless Chromium on a 1366x768 screen, with the real capture
service (test pattern): two tabs on one room (the second shows the study the first started,
without a reload), Stop answered at once and the recording's outcome shown when it is known,
the captured items' controls inside their cards, the Study Instance UID left to a tooltip, and
presses on Snapshot that all reach capture while status events stream (the controls are updated
in place, never made again under the operator's finger)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import CaptureStateChanged
from cinebridge_testkit import wait_for
from cinebridge_testkit.browser import CART, capture_room, chromium, log_in
from playwright.async_api import Page, expect

from .conftest import RunningGateway
from .test_gateway_ui import shot

pytestmark = pytest.mark.integration


async def test_the_room_on_two_tabs_and_a_cart_screen(
    gateway_factory: Any, peer_bus: Bus, tmp_path: Path
) -> None:
    preview_port = free_port()
    gw = await gateway_factory(
        gateway_preview_upstreams={"or1": f"http://127.0.0.1:{preview_port}"}
    )
    api = await gw.login()
    env, log = gw.station_env(), tmp_path / "capture.log"
    try:
        async with capture_room(api, env, log, preview_port=preview_port), chromium() as browser:
            context = await browser.new_context(viewport=CART)
            first, second = await context.new_page(), await context.new_page()
            await log_in(first, gw.url, at="#/room")
            await expect(first.locator("#study-patient")).to_have_text("No current study")
            await second.goto(f"{gw.url}/#/room")
            await expect(second.locator("#study-patient")).to_have_text("No current study")
            await two_tabs(first, second, gw)
            await stop_and_outcome(first, gw)
            await cart_layout(first)
            await snapshots_while_events_stream(first, gw, peer_bus)
    finally:
        await api.aclose()
        for running, task in gateway_factory.running:
            running.ctx.stop.set()
            await asyncio.wait_for(task, 15)


async def two_tabs(first: Page, second: Page, gw: RunningGateway) -> None:
    """A study started in one tab is the room's: the other tab, untouched, shows it."""
    await first.click("#new-study")
    await first.fill("#patient-form input[name=patient_name]", "DOE^JANE")
    await first.fill("#patient-form input[name=patient_id]", "PID-1")
    await first.click("#patient-submit")
    await expect(first.locator("#study-patient")).to_have_text("DOE, JANE", timeout=15_000)
    await expect(second.locator("#study-patient")).to_have_text("DOE, JANE", timeout=15_000)
    await expect(second.locator("#study-patient-id")).to_have_text("PID-1")
    # Closed in the second tab while the first has a dialog open on DOE's study: the first tab
    # reads the room again but paints the next patient only once that dialog is closed.
    await first.click("#discontinue-button")
    await expect(first.locator("#discontinue-dialog")).to_be_visible()
    async with first.expect_request(
        lambda r: r.url.endswith("/api/v1/rooms"), timeout=15_000
    ) as reading:
        await second.click("#close-study")
        await expect(second.locator("#study-patient")).to_have_text("No current study")
    answer = await (await reading.value).response()
    assert answer is not None
    await answer.finished()
    # The page's own turn to act on that answer (it would paint at once, no study to read).
    await first.evaluate("() => new Promise((done) => setTimeout(done, 200))")
    await expect(first.locator("#discontinue-dialog")).to_be_visible()
    await expect(first.locator("#study-patient")).to_have_text("DOE, JANE")
    await first.click("#discontinue-dialog button[value=cancel]")
    await expect(first.locator("#study-patient")).to_have_text("No current study", timeout=15_000)
    current = await gw.ctx.pool.fetchval("SELECT study_id FROM capture_rooms WHERE room = 'or1'")
    assert current is None


async def stop_and_outcome(page: Page, gw: RunningGateway) -> None:
    """Stop is answered at once ("finishing"); how the recording ended shows when known."""
    await page.click("[data-action=snapshot]")  # no current study: an unscheduled one
    await expect(page.locator("#thumbs .thumb")).to_have_count(1, timeout=20_000)
    await page.click("[data-action=record_start]")
    timer = page.locator(".rec-timer")
    await expect(timer).to_have_text(re.compile(r"^0:0[2-9]$"), timeout=20_000)
    # A reload in the middle: the state and the running time come back from the server.
    await page.reload()
    await expect(page.locator("[data-action=record_stop]")).to_be_visible(timeout=15_000)
    await expect(timer).to_have_text(re.compile(r"^0:(0[2-9]|[1-5]\d)$"))
    await page.click("[data-action=record_stop]")
    await expect(page.locator("#toast")).to_contain_text("Recording stopped (finishing the file)")
    outcome = page.locator("[data-source=endo] [data-last-recording=done]")
    await expect(outcome).to_contain_text("Last recording kept", timeout=60_000)
    await expect(page.locator("#thumbs video")).to_have_count(1, timeout=30_000)
    frames = await gw.ctx.pool.fetchval("SELECT frames FROM media WHERE kind = 'recording'")
    await expect(outcome).to_contain_text(f"{frames} frames")
    await expect(page.locator("[data-action=record_start]")).to_be_enabled()
    await shot(page, "room-cart-stopped")


async def cart_layout(page: Page) -> None:
    """On the cart's 1366x768 screen each item's controls stay inside its card, and the
    clinician reads when the study started, not its UID."""
    await page.set_viewport_size(CART)
    cards = page.locator("#thumbs .thumb")
    await expect(cards).to_have_count(2)
    for i in range(2):
        card = await cards.nth(i).bounding_box()
        delete = await cards.nth(i).locator("button").bounding_box()
        assert card and delete
        assert delete["x"] + delete["width"] <= card["x"] + card["width"] + 0.5, (card, delete)
        assert delete["y"] + delete["height"] <= card["y"] + card["height"] + 0.5, (card, delete)
    uid = await gw_study_uid(page)
    assert uid not in await page.inner_text("#study-card")
    assert uid in (await page.get_attribute("#study-started", "title") or "")


async def gw_study_uid(page: Page) -> str:
    study = await page.get_attribute("#study-card", "data-study")
    detail = await page.evaluate(
        "async (id) => (await (await fetch(`/api/v1/studies/${id}`)).json())", study
    )
    return str(detail["study_instance_uid"])


SNAPSHOTS = 5


async def snapshots_while_events_stream(page: Page, gw: RunningGateway, bus: Bus) -> None:
    """While a recording runs and status events keep coming, each press on Snapshot reaches
    capture (a media row), and the buttons are the very elements they were before the events
    (a control made again between press and release loses the click, and the focus)."""
    await page.click("[data-action=record_start]")
    await expect(page.locator("[data-action=record_stop]")).to_be_visible(timeout=20_000)
    refreshes = 0

    def on_request(request: Any) -> None:
        nonlocal refreshes
        if request.url.endswith("/api/v1/rooms"):
            refreshes += 1

    page.on("request", on_request)
    controls = "[data-source=endo] [data-action=snapshot], [data-source=endo] .rec, #save-button"
    await page.evaluate(
        "(sel) => { for (const b of document.querySelectorAll(sel)) b.cbMarked = true; }", controls
    )
    streaming = asyncio.Event()
    stop = asyncio.Event()

    async def stream() -> None:
        # A status like the capture service's own, again and again: each one makes the Room read
        # the room's state (the page gathers events 300 ms apart, so these come slower).
        while not stop.is_set():
            await bus.publish_core(
                CaptureStateChanged(room="or1", source="endo", state="recording")
            )
            streaming.set()
            await asyncio.sleep(0.4)

    async def snapshots() -> int:
        n = await gw.ctx.pool.fetchval("SELECT count(*) FROM media WHERE kind = 'snapshot'")
        return int(n)

    task = asyncio.create_task(stream())
    try:
        await streaming.wait()
        before = await snapshots()
        thumbs = await page.locator("#thumbs .thumb").count()
        for i in range(1, SNAPSHOTS + 1):
            await page.click("[data-source=endo] [data-action=snapshot]")

            async def arrived(expected: int = before + i) -> bool:
                return await snapshots() >= expected

            await wait_for(
                arrived, 30, interval_s=0.2, what=f"snapshot {i} of {SNAPSHOTS} in media"
            )
        assert await snapshots() == before + SNAPSHOTS
        await expect(page.locator("#thumbs .thumb")).to_have_count(
            thumbs + SNAPSHOTS, timeout=30_000
        )
        # The Room has read the room's state again several times since the buttons were marked.
        seen = refreshes

        async def refreshed() -> bool:
            return refreshes >= seen + 3

        await wait_for(refreshed, 60, interval_s=0.2, what="three more refreshes of the Room")
        marked = await page.evaluate(
            "(sel) => [...document.querySelectorAll(sel)].map((b) => b.cbMarked === true)", controls
        )
        assert marked == [True, True, True], marked
        focused = await page.evaluate("() => document.activeElement?.dataset.action ?? null")
        assert focused == "snapshot"
    finally:
        stop.set()
        await task
    await page.click("[data-action=record_stop]")
    await expect(page.locator("#thumbs video")).to_have_count(2, timeout=60_000)
