"""The Room's keyboard and roles in headless Chromium (a real gateway; the capture service
played by the FakeRoom peer): the pedal keys act only as plain keys on the Room page with no
dialog open (Ctrl+R stays the browser's reload, never a recording), a viewer sees no control
that changes something and its keys send nothing, and a session that ended brings the operator
back to the page they were on after logging in again (and no dialog of the former page stays
over the log-in form); a worklist server is edited in place; a disabled destination cannot be
picked for Forward."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import (
    Destination,
    DestinationListReply,
    DestinationListRequest,
    Reply,
    WorklistServer,
    WorklistServersList,
    WorklistServersReply,
    WorklistServerUpsert,
)
from cinebridge_testkit.browser import (
    ADMIN_PASSWORD,
    CART,
    chromium,
    log_in,
    start_unscheduled_study,
    ui_page,
)
from playwright.async_api import Page, expect

from .conftest import RunningGateway
from .test_gateway_ui import FakeRoom, gateway_with_room, serve_peers

pytestmark = pytest.mark.integration

VIEWER_PASSWORD = "Viewer-Password-9"


async def test_keys_roles_and_a_lapsed_session_in_the_browser(
    gateway_factory: Any, peer_bus: Bus
) -> None:
    async with gateway_with_room(gateway_factory, peer_bus) as (gw, room):
        await serve_peers(peer_bus)
        await make_viewer(gw)
        try:
            async with chromium() as browser:
                page = await browser.new_page(viewport=CART)
                await operator_keys(page, gw, room)
                await refresh_spares_the_form(page)
                await lapsed_session(page)
                await lapsed_session_under_a_dialog(page)
                viewer = await browser.new_page(viewport=CART)
                await viewer_sees_no_controls(viewer, gw, room)
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


async def operator_keys(page: Page, gw: RunningGateway, room: FakeRoom) -> None:
    await log_in(page, gw.url)
    await start_unscheduled_study(page)
    # The Room's controls have names a screen reader announces (the room picker had none).
    picker = page.get_by_role("combobox", name="Room shown on this screen")
    await expect(picker).to_have_value("or1")
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


async def refresh_spares_the_form(page: Page) -> None:
    """A refresh the Room asked for (a live event) that comes due after the operator went on to
    the patient form must not repaint the form and wipe what is typed."""
    await page.evaluate(
        """async () => {
            const lib = await import("/ui/lib.js");
            lib.scheduleRefresh();
            location.hash = "#/patient/new";
        }"""
    )
    await page.fill("#patient-form input[name=patient_name]", "POE^EDGAR")
    # The refresh timer (300 ms) is due before this one: the page's own clock, not a guess.
    await page.evaluate("new Promise((done) => setTimeout(done, 1000))")
    await expect(page.locator("#patient-form input[name=patient_name]")).to_have_value("POE^EDGAR")
    await page.click("#patient-form button:text('Cancel')")
    await expect(page.locator("#study-card")).to_be_visible()


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


async def lapsed_session_under_a_dialog(page: Page) -> None:
    """The session ends while the Export dialog is open: the dialog (modal, with the patient's
    name) stayed over the log-in form, which could not be used until it was closed."""
    await page.click("#nav-room")
    await page.click("#export-button")
    await expect(page.locator("#export-dialog")).to_be_visible()
    await page.context.clear_cookies()
    await page.click("#export-go")
    await expect(page.locator("#login-form")).to_be_visible()
    await expect(page.locator("dialog")).to_have_count(0)
    await page.fill("input[name=username]", "admin", timeout=5_000)
    await page.fill("input[name=password]", ADMIN_PASSWORD)
    await page.click("#login-button")
    await expect(page.locator("#study-card")).to_be_visible(timeout=10_000)


async def viewer_sees_no_controls(page: Page, gw: RunningGateway, room: FakeRoom) -> None:
    await log_in(page, gw.url, "watcher", VIEWER_PASSWORD)
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


async def test_a_worklist_server_is_edited_keeping_what_the_form_does_not_show(
    gateway_factory: Any, peer_bus: Bus
) -> None:
    """Hospital IT moves the RIS to a new host: Edit, change the host, Save. Before, the only
    way was Delete and Add, which lost the server's C keys, character set and limits."""
    gw = await gateway_factory()
    servers = {
        "ris": WorklistServer(
            id="ris",
            name="RIS",
            host="10.0.0.5",
            port=104,
            called_ae="RIS",
            modality="ES",
            character_set="ISO_IR 100",
            timeout_s=20.0,
            max_entries=500,
        )
    }
    upserts: list[WorklistServer] = []

    async def listed(_: WorklistServersList) -> Reply:
        return WorklistServersReply(servers=list(servers.values()))

    async def upsert(req: WorklistServerUpsert) -> Reply:
        upserts.append(req.server)
        servers[req.server.id] = req.server
        return WorklistServersReply(servers=list(servers.values()))

    async def destinations(_: DestinationListRequest) -> Reply:
        return DestinationListReply(destinations=[])

    await peer_bus.serve(WorklistServersList, listed)
    await peer_bus.serve(WorklistServerUpsert, upsert)
    await peer_bus.serve(DestinationListRequest, destinations)
    try:
        async with ui_page(gw.url, viewport=CART) as page:
            await page.click("#nav-settings")
            row = page.locator("#worklist-servers tr[data-server=ris]")
            await expect(row).to_contain_text("10.0.0.5")
            await row.locator("[data-action=edit]").click()
            form = page.locator("#worklist-server-form")
            await expect(form.locator("input[name=id]")).to_have_value("ris")
            await expect(form.locator("input[name=called_ae]")).to_have_value("RIS")
            await form.locator("input[name=host]").fill("ris.hospital.example")
            await page.click("#worklist-server-save")
            await expect(page.locator("#toast")).to_contain_text("Worklist server updated")
            await expect(row).to_contain_text("ris.hospital.example")
    finally:
        for running, task in gateway_factory.running:
            running.ctx.stop.set()
            await asyncio.wait_for(task, 15)
    assert len(upserts) == 1 and list(servers) == ["ris"]
    saved = upserts[0]
    assert saved.host == "ris.hospital.example"
    kept = (saved.modality, saved.character_set, saved.timeout_s, saved.max_entries)
    assert kept == ("ES", "ISO_IR 100", 20.0, 500)


async def test_forward_cannot_pick_a_disabled_destination(
    gateway_factory: Any, peer_bus: Bus
) -> None:
    """A disabled destination has no sender worker: a Forward to it would stay queued with no
    word to the operator. The dialog shows it as disabled and it cannot be ticked."""
    async with gateway_with_room(gateway_factory, peer_bus) as (gw, _room):
        pacs = Destination(
            id=str(uuid.UUID(int=1)), name="PACS", ae_title="PACS", host="pacs", port=104
        )
        old = Destination(
            id=str(uuid.UUID(int=2)),
            name="OLD",
            ae_title="OLD",
            host="old",
            port=104,
            enabled=False,
        )

        async def destinations(_: DestinationListRequest) -> Reply:
            return DestinationListReply(destinations=[pacs, old])

        await peer_bus.serve(DestinationListRequest, destinations)
        try:
            async with ui_page(gw.url, viewport=CART) as page:
                await start_unscheduled_study(page)
                await page.click("#forward-button")
                dialog = page.locator("#forward-dialog")
                enabled = dialog.locator(f"[data-destination='{pacs.id}'] input")
                disabled = dialog.locator(f"[data-destination='{old.id}'] input")
                await expect(enabled).to_be_enabled()
                await expect(disabled).to_be_disabled()
                await expect(dialog).to_contain_text("OLD (OLD@old:104) — disabled in Settings")
        finally:
            for running, task in gateway_factory.running:
                running.ctx.stop.set()
                await asyncio.wait_for(task, 15)


async def test_the_patient_form_and_local_search_act_on_the_room_s_current_study(
    gateway_factory: Any, peer_bus: Bus
) -> None:
    """Edit patient kept the patient the page had last shown: reloaded, the form became a New
    study form; left open while another screen switched the room, it saved its values onto the
    former patient's study. Local search gave a patient to the current study without naming
    it, and to the study it had read even after the room moved on."""
    async with gateway_with_room(gateway_factory, peer_bus) as (gw, _room):
        api = await gw.login()
        try:
            async with ui_page(gw.url, viewport=CART) as page:
                await edit_form_follows_the_room(page, gw, api)
                await local_names_the_current_study(page, gw, api)
        finally:
            await api.aclose()
            for running, task in gateway_factory.running:
                running.ctx.stop.set()
                await asyncio.wait_for(task, 15)


async def start_elsewhere(api: Any, name: str, patient_id: str) -> None:
    """Another screen starts a study for `name` in the room (and confirms the switch)."""
    patient = {"patient_name": name, "patient_id": patient_id}
    body = {"origin": "form", "patient": patient, "confirm": True}
    started = await api.post("/api/v1/rooms/or1/study", json=body)
    assert started.status_code in (200, 201), started.text


async def patient_of(gw: RunningGateway, patient_id: str) -> str:
    sql = "SELECT patient_name FROM studies WHERE patient_id = $1"
    return str(await gw.ctx.pool.fetchval(sql, patient_id))


async def edit_form_follows_the_room(page: Page, gw: RunningGateway, api: Any) -> None:
    form = page.locator("#patient-form")
    await page.click("#new-study")
    await form.locator("input[name=patient_name]").fill("DOE^JANE")
    await form.locator("input[name=patient_id]").fill("PID-1")
    await form.locator("select[name=patient_sex]").select_option("F")
    await form.locator("input[name=study_description]").fill("Gastroscopy")
    await page.click("#patient-submit")
    await expect(page.locator("#study-patient")).to_have_text("DOE, JANE", timeout=10_000)
    # Reloaded, the edit form is still the current study's, every field of it.
    await page.click("#edit-patient")
    await page.reload()
    await expect(form.locator("h1")).to_have_text("Edit patient data", timeout=10_000)
    await expect(form.locator("#room-current")).to_contain_text("DOE, JANE · ID PID-1")
    await expect(form.locator("input[name=patient_name]")).to_have_value("DOE^JANE")
    await expect(form.locator("select[name=patient_sex]")).to_have_value("F")
    await expect(form.locator("input[name=study_description]")).to_have_value("Gastroscopy")
    # Another screen makes ROE current while this form is open on DOE: nothing is saved, and
    # the Room shows ROE.
    await start_elsewhere(api, "ROE^RICHARD", "PID-2")
    await form.locator("input[name=patient_name]").fill("DOE^JANET")
    await page.click("#patient-submit")
    await expect(page.locator("#toast.error")).to_contain_text("nothing was saved")
    await expect(page.locator("#study-patient")).to_have_text("ROE, RICHARD", timeout=10_000)
    assert await patient_of(gw, "PID-1") == "DOE^JANE"


async def local_names_the_current_study(page: Page, gw: RunningGateway, api: Any) -> None:
    await page.click("#nav-local")
    await expect(page.locator("#room-current")).to_have_text(
        "Room or1 · current study: ROE, RICHARD · ID PID-2"
    )
    doe = page.locator("#local-results tr", has_text="PID-1")
    take = doe.locator("button:text('Use for current study')")
    await expect(take).to_be_visible(timeout=10_000)
    # The room moves on to MOE before the operator picks DOE for ROE's study.
    await start_elsewhere(api, "MOE^MARY", "PID-3")
    await take.click()
    await expect(page.locator("#toast.error")).to_contain_text("nothing was changed")
    await expect(page.locator("#room-current")).to_contain_text("MOE, MARY", timeout=10_000)
    assert (await patient_of(gw, "PID-2"), await patient_of(gw, "PID-3")) == (
        "ROE^RICHARD",
        "MOE^MARY",
    )


async def test_a_page_opened_by_its_url_is_the_one_shown_after_the_log_in(
    gateway_factory: Any,
) -> None:
    """IT's bookmark of the Ops page opened the log-in form, and the log-in then showed the
    Room: the page asked for was forgotten."""
    gw = await gateway_factory()
    async with ui_page(gw.url, None, at="#/ops", viewport=CART) as page:
        await expect(page.locator("#login-form")).to_be_visible()
        await page.fill("input[name=username]", "admin")
        await page.fill("input[name=password]", ADMIN_PASSWORD)
        await page.click("#login-button")
        await expect(page.locator("#health-status")).to_be_visible(timeout=30_000)
        assert page.url.endswith("#/ops"), page.url


async def test_a_room_whose_capture_does_not_answer_shows_its_study_as_unknown(
    gateway_factory: Any, peer_bus: Bus
) -> None:
    """The capture service keeps the room's current study. While it did not answer (NATS or
    capture down), the Room said "No current study" and offered to start one, and the Local
    and Worklist pages said "current study: none", though the room still had its patient."""
    async with gateway_with_room(gateway_factory, peer_bus) as (gw, room):
        async with ui_page(gw.url, viewport=CART) as page:
            await start_unscheduled_study(page)
            room.down = "capture is restarting"
            await page.reload()
            await expect(page.locator("#study-patient")).to_have_text("Current study unknown")
            await expect(page.locator("#new-study")).to_have_count(0)
            await page.click("#nav-local")
            await expect(page.locator("#room-current")).to_contain_text(
                "Room or1 · current study unknown: "
            )
            room.down = None
            await page.click("#nav-room")
            badge = page.locator("#study-card .badge", has_text="unscheduled")
            await expect(badge).to_be_visible(timeout=10_000)


async def test_a_page_slow_to_come_does_not_leave_the_former_room_under_its_tab(
    gateway_factory: Any, peer_bus: Bus
) -> None:
    """Local opened while the room's capture service was slow to answer: for as long as the
    gateway waited for it, the tab read Local and the page still showed the Room, its patient
    and its live Snapshot button. The page now says it is loading."""
    async with gateway_with_room(gateway_factory, peer_bus) as (gw, room):
        async with ui_page(gw.url, viewport=CART) as page:
            await start_unscheduled_study(page)
            room.slow_s = 10.0
            await page.click("#nav-local")
            await expect(page.locator("#page-loading")).to_be_visible()
            await expect(page.locator("#study-card")).to_have_count(0)
            await expect(page.locator("#local-form")).to_be_visible(timeout=30_000)


async def test_the_ops_page_shows_although_its_summary_is_slow_to_come(
    gateway_factory: Any, peer_bus: Bus
) -> None:
    """A capture service slow to answer holds the Ops summary for the gateway's 3 s wait; every
    heartbeat (here the gateway's own, twice a second) started a new render that took the place
    of the one about to paint, so Ops stayed empty for as long as the room was slow."""
    async with gateway_with_room(gateway_factory, peer_bus) as (gw, room):
        async with ui_page(gw.url, viewport=CART) as page:
            await expect(page.locator("#study-card")).to_be_visible()
            room.slow_s = 60.0
            await page.click("#nav-ops")
            await expect(page.locator("#health-status")).to_be_visible(timeout=30_000)
            await expect(page.locator("#sources")).to_contain_text("or1")
