"""The room's current study in headless Chromium, with the real capture service (test pattern)
deciding it: open the Worklist by its URL, start a study, switch patient (confirmed), capture,
close, new study — each step checked in the page and in PostgreSQL (`capture_rooms`, `media`).
The worklist service is played by a peer that answers its bus contract with two items."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import (
    Reply,
    WorklistCheckItem,
    WorklistCheckItemReply,
    WorklistItem,
    WorklistQuery,
    WorklistQueryReply,
    WorklistServersList,
    WorklistServersReply,
)
from cinebridge_testkit import require_tool
from cinebridge_testkit.browser import VIEWPORT, capture_room, chromium, log_in
from playwright.async_api import Dialog, Page, expect

from .conftest import RunningGateway
from .test_gateway_ui import shot

pytestmark = pytest.mark.integration

ITEMS = [
    WorklistItem(
        patient_name="DOE^JANE",
        patient_id="PID-1",
        patient_birth_date="19800102",
        patient_sex="F",
        accession_number="ACC-1",
        requested_procedure_description="Gastroscopy",
        study_instance_uid="1.2.826.0.1.3680043.8.498.101",
    ),
    WorklistItem(
        patient_name="ROE^RICHARD",
        patient_id="PID-2",
        patient_birth_date="19701231",
        patient_sex="M",
        accession_number="ACC-2",
        requested_procedure_description="Colonoscopy",
        study_instance_uid="1.2.826.0.1.3680043.8.498.102",
    ),
    # Not started from the list: the unscheduled study is linked to it at the end.
    WorklistItem(
        patient_name="MOE^MARY",
        patient_id="PID-3",
        patient_birth_date="19900315",
        patient_sex="F",
        accession_number="ACC-3",
        requested_procedure_description="Bronchoscopy",
        study_instance_uid="1.2.826.0.1.3680043.8.498.103",
    ),
]


async def serve_worklist(bus: Bus, reconciled: list[str]) -> None:
    async def query(q: WorklistQuery) -> Reply:
        prefix = (q.patient_name or "").rstrip("*")
        return WorklistQueryReply(items=[i for i in ITEMS if i.patient_name.startswith(prefix)])

    async def servers(_: WorklistServersList) -> Reply:
        return WorklistServersReply(servers=[])

    async def check_item(r: WorklistCheckItem) -> Reply:
        # The item the page picked; the room's capture process (the study catalog) links it.
        reconciled.append(r.item.study_instance_uid or "")
        return WorklistCheckItemReply(item=r.item)

    await bus.serve(WorklistQuery, query)
    await bus.serve(WorklistServersList, servers)
    await bus.serve(WorklistCheckItem, check_item)


async def test_room_study_lifecycle_in_the_browser(
    gateway_factory: Any, peer_bus: Bus, tmp_path: Path
) -> None:
    require_tool("ffmpeg")
    preview_port = free_port()
    gw = await gateway_factory(
        gateway_preview_upstreams={"or1": f"http://127.0.0.1:{preview_port}"}
    )
    reconciled: list[str] = []
    await serve_worklist(peer_bus, reconciled)
    api = await gw.login()
    env, log = gw.station_env(), tmp_path / "capture.log"
    try:
        async with capture_room(api, env, log, preview_port=preview_port), chromium() as browser:
            page = await browser.new_page(viewport=VIEWPORT)
            await lifecycle(page, gw, api, reconciled)
            await api_edges(api)
    finally:
        await api.aclose()
        for running, task in gateway_factory.running:
            running.ctx.stop.set()
            await asyncio.wait_for(task, 15)


async def current_patient(gw: RunningGateway) -> str | None:
    """The room's current study as the capture service keeps it (the one place it lives)."""
    value = await gw.ctx.pool.fetchval(
        """SELECT s.patient_name FROM capture_rooms r JOIN studies s ON s.id = r.study_id
           WHERE r.room = 'or1'"""
    )
    return str(value) if value is not None else None


async def media_of(gw: RunningGateway, patient_name: str) -> int:
    return int(
        await gw.ctx.pool.fetchval(
            """SELECT count(*) FROM media m JOIN studies s ON s.id = m.study_id
               WHERE s.patient_name = $1""",
            patient_name,
        )
    )


async def start_from_worklist(page: Page, gw: RunningGateway, name: str) -> None:
    """The reproduction: the Worklist opened by its URL (a reload: the page has never shown
    the Room), a search, "Start study"."""
    await page.goto(f"{gw.url}/#/worklist")
    await page.reload()
    await page.fill("#worklist-form input[name=patient_name]", name)
    await page.click("#worklist-search")
    row = page.locator("#worklist-results tr", has_text=name)
    await expect(row).to_have_count(1, timeout=15_000)
    await row.locator("button:text('Start study')").click()


async def current_study_id(gw: RunningGateway) -> str | None:
    value = await gw.ctx.pool.fetchval("SELECT study_id FROM capture_rooms WHERE room = 'or1'")
    return str(value) if value is not None else None


async def study_id_of(gw: RunningGateway, patient_name: str) -> str:
    return str(
        await gw.ctx.pool.fetchval("SELECT id FROM studies WHERE patient_name = $1", patient_name)
    )


async def lifecycle(page: Page, gw: RunningGateway, api: Any, reconciled: list[str]) -> None:
    dialogs: list[str] = []

    async def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    await log_in(page, gw.url, at="#/worklist")
    await expect(page.locator("#nav-room")).to_be_visible()

    # The Worklist opened by its URL knows its room, and that the room has no current study.
    await page.goto(f"{gw.url}/#/worklist")
    await page.reload()
    await expect(page.locator("#room-current")).to_have_text("Room or1 · current study: none")

    # First patient from the worklist: the Room and the database name DOE as current.
    await start_from_worklist(page, gw, "DOE")
    await expect(page.locator("#study-patient")).to_have_text("DOE, JANE", timeout=15_000)
    await expect(page.locator("#study-patient-id")).to_have_text("PID-1")
    await expect(page.locator("#study-birth-date")).to_have_text("1980-01-02")
    await expect(page.locator("#study-accession")).to_have_text("ACC-1")
    assert await current_patient(gw) == "DOE^JANE"
    await page.click("[data-action=snapshot]")
    await expect(page.locator("#thumbs .thumb")).to_have_count(1, timeout=20_000)
    await expect(page.locator("#last-capture")).to_contain_text("DOE, JANE")
    assert await media_of(gw, "DOE^JANE") == 1
    assert dialogs == []

    # Second patient while DOE's study holds an image: the switch asks, then happens.
    await start_from_worklist(page, gw, "ROE")
    await expect(page.locator("#study-patient")).to_have_text("ROE, RICHARD", timeout=15_000)
    assert len(dialogs) == 1 and "DOE, JANE" in dialogs[0], dialogs
    # Said as the operator reads it: what the study holds stays with it; no API wording.
    assert "holds 1 captured item(s); they stay with that study" in dialogs[0], dialogs
    assert "Switch or1 to the new study?" in dialogs[0] and "confirm" not in dialogs[0], dialogs
    assert await current_patient(gw) == "ROE^RICHARD"
    await page.click("[data-action=snapshot]")
    await expect(page.locator("#thumbs .thumb")).to_have_count(1, timeout=20_000)
    await expect(page.locator("#last-capture")).to_contain_text("ROE, RICHARD")
    await expect(page.locator("#last-capture")).to_contain_text("PID-2")
    assert await media_of(gw, "ROE^RICHARD") == 1
    assert await media_of(gw, "DOE^JANE") == 1, "the first study keeps only its own image"
    await shot(page, "room-study-switched")

    # Another screen makes DOE current again while this page still shows ROE (or has just
    # refreshed): the snapshot goes to DOE, and the page says DOE — never ROE.
    doe = await study_id_of(gw, "DOE^JANE")
    switched = await api.put("/api/v1/rooms/or1/study", json={"study_id": doe, "confirm": True})
    assert switched.status_code == 200, switched.text
    await page.click("[data-action=snapshot]")
    await expect(page.locator("#study-patient")).to_have_text("DOE, JANE", timeout=15_000)
    await expect(page.locator("#last-capture")).to_contain_text("DOE, JANE", timeout=15_000)
    await expect(page.locator("#last-capture")).to_contain_text("PID-1")
    await expect(page.locator("#thumbs .thumb")).to_have_count(2, timeout=20_000)
    assert (await media_of(gw, "DOE^JANE"), await media_of(gw, "ROE^RICHARD")) == (2, 1)

    # Close study: no current study, in the page and in the database.
    await page.click("#close-study")
    await expect(page.locator("#study-patient")).to_have_text("No current study")
    assert await current_patient(gw) is None
    assert (
        await gw.ctx.pool.fetchval("SELECT study_id FROM capture_rooms WHERE room = 'or1'") is None
    )

    # New study from the patient form: current at once (the closed room asks nothing).
    await page.click("#new-study")
    await page.fill("#patient-form input[name=patient_name]", "POE^EDGAR^ALLAN")
    await page.fill("#patient-form input[name=patient_id]", "PID-3")
    await page.fill("#patient-form input[name=modality]", "es")
    await page.click("#patient-submit")
    await expect(page.locator("#study-patient")).to_have_text("POE, EDGAR ALLAN", timeout=15_000)
    assert await current_patient(gw) == "POE^EDGAR^ALLAN"
    # The form's Modality (a CS, upper case) is the study's: on the Room page and in the row.
    await expect(page.locator("#study-modality")).to_have_text("ES")
    await page.click("#edit-patient")
    await expect(page.locator("#patient-form input[name=modality]")).to_have_value("ES")
    await page.fill("#patient-form input[name=modality]", "XC")
    await page.click("#patient-submit")
    await expect(page.locator("#study-modality")).to_have_text("XC", timeout=15_000)
    modality = "SELECT modality FROM studies WHERE patient_name = 'POE^EDGAR^ALLAN'"
    assert await gw.ctx.pool.fetchval(modality) == "XC"
    assert len(dialogs) == 1

    # New study while POE's study is still empty: no question, and "Start without patient
    # data" makes an unscheduled study current; a capture goes to it.
    await page.click("#new-study")
    await page.click("#start-unscheduled")
    await expect(page.locator("#study-card .badge", has_text="unscheduled")).to_be_visible()
    assert await current_patient(gw) == ""
    await page.click("[data-action=snapshot]")
    await expect(page.locator("#thumbs .thumb")).to_have_count(1, timeout=20_000)
    assert len(dialogs) == 1
    # Record: the Stop button counts the recording's real running time.
    await page.click("[data-action=record_start]")
    timer = page.locator(".rec-timer")
    await expect(timer).to_have_text(re.compile(r"^0:0[1-9]$"), timeout=20_000)
    await shot(page, "room-study-unscheduled")
    await page.click("[data-action=record_stop]")
    await expect(page.locator("#thumbs .thumb")).to_have_count(2, timeout=30_000)
    await expect(page.locator("#thumbs video")).to_have_count(1)

    # The Worklist opened by its URL offers the unscheduled current study its worklist item
    # (statement §4.1.3) and links that study, the room's current one, to it.
    unscheduled = await current_study_id(gw)
    await page.goto(f"{gw.url}/#/worklist")
    await page.reload()
    await expect(page.locator("#room-current")).to_contain_text("Room or1 · current study: ")
    await page.fill("#worklist-form input[name=patient_name]", "MOE")
    await page.click("#worklist-search")
    row = page.locator("#worklist-results tr", has_text="MOE")
    await row.locator("button:text('Use for current study')").click()
    await expect(page.locator("#study-card")).to_be_visible(timeout=15_000)
    assert reconciled == ["1.2.826.0.1.3680043.8.498.103"], reconciled
    linked = await gw.ctx.pool.fetchrow(
        "SELECT study_instance_uid, origin FROM studies WHERE id = $1", uuid.UUID(unscheduled)
    )
    assert tuple(linked) == ("1.2.826.0.1.3680043.8.498.103", "worklist"), tuple(linked)


async def api_edges(api: Any) -> None:
    """What the page relies on, at the API: confirmation, one request per start, 404s."""
    current = (await api.get("/api/v1/rooms/or1/study")).json()["study"]
    assert current["media_count"] == 2  # the snapshot and the recording
    refused = await api.post(
        "/api/v1/rooms/or1/study",
        json={"origin": "form", "patient": {"patient_name": "NEW^ONE"}},
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "confirmation_required"
    assert (await api.get("/api/v1/rooms/or1/study")).json()["study"]["id"] == current["id"]
    found = (await api.get("/api/v1/studies", params={"q": "NEW"})).json()
    assert found == [], "a refused start leaves no study behind"
    unknown = await api.post(
        "/api/v1/rooms/nowhere/study", json={"origin": "unscheduled", "confirm": True}
    )
    assert unknown.status_code == 404, unknown.text
    assert (await api.get("/api/v1/rooms/nowhere")).status_code == 404
    snapshot = await api.post("/api/v1/rooms/nowhere/sources/endo/snapshot")
    assert snapshot.status_code == 404, snapshot.text
    opened = await api.put(
        "/api/v1/rooms/or1/study", json={"study_id": str(uuid.uuid4()), "confirm": True}
    )
    assert opened.status_code == 404, opened.text
