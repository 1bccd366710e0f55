"""The study's performed procedure step through the gateway API, with the worklist service and a
pynetdicom MPPS SCP running: Save announces the media to convert (the step completes once the
converter's instances are in), Discontinue sends the CID 9300 reason, and the study API and the
Room (headless Chromium) show the step's state and last error."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import (
    InstanceCreated,
    MediaCaptured,
    WorklistServer,
)
from cinebridge_common.store import MediaStore
from cinebridge_testkit import running_app, wait_for
from cinebridge_testkit.browser import announce_room, ui_page
from cinebridge_testkit.worklist_peers import FakeMpps
from cinebridge_worklist.app import WorklistApp
from cinebridge_worklist.settings import WorklistSettings
from playwright.async_api import expect

from .test_gateway_api import add_media
from .test_gateway_ui import FakeRoom

pytestmark = pytest.mark.integration


@pytest.fixture
def scp() -> Any:
    with FakeMpps() as peer:
        yield peer


@pytest.fixture
async def worklist(
    nats_url: str, database_url: str, tmp_path: Path, scp: FakeMpps
) -> AsyncIterator[WorklistApp]:
    server = WorklistServer(
        id="ris",
        host="127.0.0.1",
        port=free_port(),
        called_ae="RIS",
        mpps_enabled=True,
        mpps_ae="FAKEMPPS",
        mpps_port=scp.port,
    )
    app = WorklistApp(
        WorklistSettings(
            nats_url=nats_url,
            database_url=database_url,
            media_root=tmp_path / "media",
            instance_id="worklist-gw-test",
            worklist_seed_servers=[server],
            worklist_mpps_backoff_s=0.5,
            worklist_mpps_backoff_cap_s=2,
        )
    )
    async with running_app(app):
        yield app


def mpps_state(admin: Any, study_id: str, state: str) -> Any:
    async def check() -> dict[str, Any] | None:
        step = (await admin.get(f"/api/v1/studies/{study_id}")).json().get("mpps")
        return step if step and step["state"] == state else None

    return check


async def captured(bus: Bus, study_id: str, media_id: str) -> None:
    """What the capture service announces for each snapshot."""
    await bus.publish(
        MediaCaptured(
            media_id=media_id,
            study_id=study_id,
            room="or1",
            source="cam1",
            kind="snapshot",
            rel_path=f"media/{media_id}.jpg",
            size=10,
            sha256="x",
            mime="image/jpeg",
        )
    )


async def converted(bus: Bus, study_id: str, media_id: str) -> str:
    """What the converter announces for each instance it made."""
    uid = f"2.25.{uuid.uuid4().int}"
    await bus.publish(
        InstanceCreated(
            instance_id=str(uuid.uuid4()),
            media_id=media_id,
            study_id=study_id,
            sop_instance_uid=uid,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.1",
            transfer_syntax_uid="1.2.840.10008.1.2.4.50",
            rel_path=f"d/{uid}",
            size=1,
            sha256="x",
            auto_send=False,
            series_instance_uid="2.25.7",
            series_description="cam1",
        )
    )
    return uid


async def test_save_completes_and_discontinue_reports_the_reason(
    gateway: Any, admin: Any, peer_bus: Bus, worklist: WorklistApp, scp: FakeMpps
) -> None:
    study = (await admin.post("/api/v1/studies", json={"origin": "form"})).json()
    assert (await admin.get(f"/api/v1/studies/{study['id']}")).json()["mpps"] is None
    media = await add_media(gateway.ctx.pool, study["id"], gateway.settings.media_root)
    for media_id in media:
        await captured(peer_bus, study["id"], media_id)
    step = await wait_for(mpps_state(admin, study["id"], "in-progress"), 30, what="IN PROGRESS")
    assert step["last_error"] is None and len(step["pps_id"]) == 16

    saved = await admin.post(f"/api/v1/studies/{study['id']}/save", json={})
    assert saved.status_code == 202, saved.text
    uids = [await converted(peer_bus, study["id"], media_id) for media_id in media]
    done = await wait_for(mpps_state(admin, study["id"], "completed"), 30, what="COMPLETED")
    assert done["final_status"] == "COMPLETED" and done["ended_at"]
    [series] = scp.requests[-1].dataset.PerformedSeriesSequence
    assert sorted(r.ReferencedSOPInstanceUID for r in series.ReferencedImageSequence) == sorted(
        uids
    )
    # The procedure is over: discontinuing it now changes nothing at the RIS.
    late = await admin.post(f"/api/v1/studies/{study['id']}/discontinue", json={"reason": "110501"})
    assert late.status_code == 202

    reasons = (await admin.get("/api/v1/codes/discontinuation-reasons")).json()
    assert {"value": "110501", "scheme": "DCM", "meaning": "Equipment failure"} in reasons
    other = (await admin.post("/api/v1/studies", json={"origin": "unscheduled"})).json()
    bad = await admin.post(f"/api/v1/studies/{other['id']}/discontinue", json={"reason": "999"})
    assert bad.status_code == 422
    [media_id] = await add_media(gateway.ctx.pool, other["id"], gateway.settings.media_root, 1)
    await captured(peer_bus, other["id"], media_id)
    await wait_for(mpps_state(admin, other["id"], "in-progress"), 30, what="IN PROGRESS")
    stop = await admin.post(f"/api/v1/studies/{other['id']}/discontinue", json={"reason": "110501"})
    assert stop.status_code == 202, stop.text
    ended = await wait_for(mpps_state(admin, other["id"], "discontinued"), 30, what="DISCONTINUED")
    assert ended["reason"] == {"value": "110501", "scheme": "DCM", "meaning": "Equipment failure"}
    audit = (await admin.get("/api/v1/audit", params={"study_id": other["id"]})).json()
    assert "study_discontinued" in [a["action"] for a in audit]

    statuses = [(r.operation, r.dataset.get("PerformedProcedureStepStatus")) for r in scp.requests]
    assert statuses == [
        ("N-CREATE", "IN PROGRESS"),
        ("N-SET", "COMPLETED"),
        ("N-CREATE", "IN PROGRESS"),
        ("N-SET", "DISCONTINUED"),
    ]


async def test_a_refused_step_shows_the_error_and_is_retried(
    gateway: Any, admin: Any, peer_bus: Bus, worklist: WorklistApp, scp: FakeMpps
) -> None:
    scp.statuses = [0x0106]  # invalid attribute value: permanent
    study = (await admin.post("/api/v1/studies", json={"origin": "unscheduled"})).json()
    await captured(peer_bus, study["id"], str(uuid.uuid4()))
    step = await wait_for(mpps_state(admin, study["id"], "failed"), 30, what="the failure")
    assert step["last_status"] == 0x0106
    assert "N-CREATE 0x0106 invalid attribute value" in step["last_error"]
    # The RIS was fixed: the operator sends the step again, and it goes through.
    retried = await admin.post(f"/api/v1/studies/{study['id']}/mpps/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "pending-create"
    again = await wait_for(mpps_state(admin, study["id"], "in-progress"), 30, what="IN PROGRESS")
    assert again["last_error"] is None and again["attempts"] == 1
    assert [r.status for r in scp.requests] == [0x0106, 0x0000]
    refused = await admin.post(f"/api/v1/studies/{study['id']}/mpps/retry")
    assert refused.status_code == 409 and "in-progress" in refused.text


async def test_room_shows_the_step_and_discontinues_it(
    gateway: Any, admin: Any, peer_bus: Bus, worklist: WorklistApp, scp: FakeMpps
) -> None:
    """In the browser: the Room shows the step's state; Discontinue sends the chosen reason."""
    room = FakeRoom(peer_bus, gateway.ctx.pool, MediaStore(gateway.settings.media_root))
    await room.start()
    started = await admin.post("/api/v1/rooms/or1/study", json={"origin": "unscheduled"})
    assert started.status_code == 201, started.text
    study_id = started.json()["study"]["id"]
    snap = await admin.post("/api/v1/rooms/or1/sources/cam1/snapshot")
    assert snap.status_code == 200, snap.text
    await wait_for(mpps_state(admin, study_id, "in-progress"), 30, what="IN PROGRESS")
    await announce_room(peer_bus, admin)
    async with ui_page(gateway.url) as page:
        step = page.locator("#study-mpps")
        await expect(step).to_have_attribute("data-mpps-state", "in-progress", timeout=15_000)
        await page.click("#discontinue-button")
        await page.select_option("#discontinue-reason", "110501")
        await page.click("#discontinue-go")
        await expect(page.locator("#toast")).to_contain_text("Procedure discontinued")
        # The step's state event re-renders the Room (live, no reload).
        await expect(step).to_have_attribute("data-mpps-state", "discontinued", timeout=30_000)
        await expect(step).to_contain_text("Equipment failure")
    code = scp.requests[-1].dataset.PerformedProcedureStepDiscontinuationReasonCodeSequence[0]
    assert code.CodeValue == "110501"


async def test_the_mpps_scp_is_a_worklist_server_setting(
    gateway: Any, admin: Any, worklist: WorklistApp
) -> None:
    """Settings page: each worklist server's MPPS SCP, checked at the door and stored by the
    worklist service; the station's trigger."""
    server = {"id": "ris2", "host": "ris.local", "port": 104, "called_ae": "RIS",
              "mpps_enabled": True, "mpps_ae": "RISMPPS", "mpps_port": 70000}  # fmt: skip
    bad = await admin.post("/api/v1/settings/worklist-servers", json=server)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "body.mpps_port"
    saved = await admin.post("/api/v1/settings/worklist-servers", json={**server, "mpps_port": 105})
    assert saved.status_code == 201, saved.text
    listed = {s["id"]: s for s in (await admin.get("/api/v1/settings/worklist-servers")).json()}
    ris2 = listed["ris2"]
    assert (ris2["mpps_enabled"], ris2["mpps_ae"], ris2["mpps_host"], ris2["mpps_port"]) == (
        True,
        "RISMPPS",
        None,
        105,
    )
    station = await admin.put("/api/v1/settings/station", json={"mpps_trigger": "study-start"})
    assert station.status_code == 200 and station.json()["mpps_trigger"] == "study-start"
    wrong = await admin.put("/api/v1/settings/station", json={"mpps_trigger": "never"})
    assert wrong.status_code == 422
