"""The Room's media progress in headless Chromium: a conversion under way shows the converter's
latest report after the page is refreshed by a live event or reloaded, from the gateway's state
(the reports are live events only: before, a refresh wiped the text until the next report)."""

from __future__ import annotations

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import CaptureStateChanged, ConversionFailed, ConversionProgressed
from cinebridge_common.store import MediaStore
from cinebridge_testkit.browser import announce_room, start_unscheduled_study, ui_page
from playwright.async_api import Page, expect

from .conftest import RunningGateway
from .test_gateway_ui import FakeRoom

pytestmark = pytest.mark.integration


async def test_progress_survives_a_refresh_and_a_reload(
    gateway: RunningGateway, peer_bus: Bus
) -> None:
    room = FakeRoom(peer_bus, gateway.ctx.pool, MediaStore(gateway.settings.media_root))
    await room.start()
    api = await gateway.login()
    try:
        await announce_room(peer_bus, api)
    finally:
        await api.aclose()
    async with ui_page(gateway.url) as page:
        await start_unscheduled_study(page)
        await page.keyboard.press("s")
        thumb = page.locator("#thumbs .thumb")
        await expect(thumb).to_have_count(1, timeout=15_000)
        media_id = str(await thumb.get_attribute("data-media"))
        assert room.study_id is not None
        progress = page.locator(f"#progress-{media_id}")

        report = ConversionProgressed(
            media_id=media_id, study_id=room.study_id, fraction=0.4, stage="transcode"
        )
        await peer_bus.publish_core(report)
        await expect(progress).to_have_text("transcode 40%", timeout=15_000)

        # A live event of the room repaints the Room from the server's answer.
        await refreshed(page, room, peer_bus)
        await expect(progress).to_have_text("transcode 40%")

        await page.reload()
        await expect(progress).to_have_text("transcode 40%", timeout=15_000)

        # The outcome ends the report: nothing left over after the next load.
        failed = ConversionFailed(media_id=media_id, study_id=room.study_id, reason="test")
        await peer_bus.publish_core(failed)
        await peer_bus.nc.flush()
        await refreshed(page, room, peer_bus)
        await expect(progress).to_have_text("")


async def refreshed(page: Page, room: FakeRoom, bus: Bus) -> None:
    """Repaint the Room by a live event of its source, and know that it was repainted: the
    room's status changes with it (recording or not), and the Room updates its source and its
    media items from the same answers, in one step."""
    room.recording = not room.recording
    await bus.publish_core(CaptureStateChanged(room="or1", source="cam1", state="idle"))
    action = "record_stop" if room.recording else "record_start"
    await expect(page.locator(f"[data-action={action}]")).to_be_visible(timeout=15_000)
