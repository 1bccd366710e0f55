"""Web UI in headless Chromium (Debian's, driven by Playwright) against a real gateway on real
NATS + PostgreSQL. The other services are played by small peers that answer their bus contracts
(capture, worklist, sender) and an MJPEG preview server; screenshots: artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import (
    CaptureCommand,
    CaptureCommandReply,
    CaptureStatusReply,
    CaptureStatusRequest,
    CatalogReconcile,
    CatalogReconcileReply,
    Destination,
    DestinationListReply,
    DestinationListRequest,
    EchoReply,
    EchoRequest,
    MediaCaptured,
    Reply,
    ServiceHeartbeat,
    SetRoomStudy,
    SetRoomStudyReply,
    WorklistCheckItem,
    WorklistCheckItemReply,
    WorklistEcho,
    WorklistEchoReply,
    WorklistItem,
    WorklistQuery,
    WorklistQueryReply,
    WorklistServer,
    WorklistServersList,
    WorklistServersReply,
)
from cinebridge_common.messages.capture import SourceStatus
from cinebridge_common.store import MediaStore
from cinebridge_testkit.browser import ADMIN_PASSWORD, capture_heartbeat, ui_page
from PIL import Image
from playwright.async_api import Page, expect

from .conftest import RunningGateway

pytestmark = pytest.mark.integration
SHOTS = Path(__file__).resolve().parents[3] / "artifacts" / "screenshots"


def jpeg(width: int = 320, height: int = 180, shade: int = 90) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 120, 200)).save(out, "JPEG", quality=70)
    return out.getvalue()


class FakeRoom:
    """Plays the capture service of room `or1` on the bus: status, set_study, commands."""

    def __init__(self, bus: Bus, pool: asyncpg.Pool, store: MediaStore) -> None:
        self.bus, self.pool, self.store = bus, pool, store
        self.study_id: str | None = None
        self.recording = False
        self.commands: list[str] = []
        #: Why the room does not answer its status now (None: it answers).
        self.down: str | None = None
        #: How long the room takes to answer its status (the gateway waits 3 s).
        self.slow_s = 0.0

    async def start(self) -> None:
        await self.bus.serve(CaptureStatusRequest, self.status, subject="cb.rpc.capture.or1.status")
        await self.bus.serve(SetRoomStudy, self.set_study, subject="cb.rpc.capture.or1.set_study")
        await self.bus.serve(CaptureCommand, self.command, subject="cb.rpc.capture.or1.command")

    async def status(self, _: CaptureStatusRequest) -> Reply:
        if self.down:
            raise RuntimeError(self.down)
        await asyncio.sleep(self.slow_s)
        source = SourceStatus(
            name="cam1",
            kind="lavfi",
            url="testsrc",
            signal=True,
            width=1280,
            height=720,
            fps_in=25.0,
            fps_encoded=25.0,
            dropped_frames=0,
            state="recording" if self.recording else "idle",
        )
        return CaptureStatusReply(
            room="or1", study_id=self.study_id, sources=[source], disk_free_bytes=50_000_000_000
        )

    async def set_study(self, req: SetRoomStudy) -> Reply:
        self.study_id = req.study_id
        return SetRoomStudyReply(study_id=req.study_id)

    async def command(self, cmd: CaptureCommand) -> Reply:
        self.commands.append(cmd.action)
        if cmd.action == "record_start":
            self.recording = True
            return CaptureCommandReply(study_id=self.study_id, recording_id="r1")
        if cmd.action == "record_stop":
            self.recording = False
        assert self.study_id, "the UI sets the room's study before capturing"
        media_id = uuid.uuid4()
        rel = f"media/{media_id.hex}.jpg"
        data = jpeg(shade=40 + 30 * len(self.commands))
        self.store.write_bytes(rel, data)
        await self.pool.execute(
            """INSERT INTO media (id, study_id, room, source, kind, rel_path, size, sha256, mime,
                                  width, height) VALUES ($1, $2, 'or1', 'cam1', 'snapshot', $3, $4,
                                  'x', 'image/jpeg', 320, 180)""",
            media_id,
            uuid.UUID(self.study_id),
            rel,
            len(data),
        )
        await self.bus.publish(
            MediaCaptured(
                media_id=str(media_id),
                study_id=self.study_id,
                room="or1",
                source="cam1",
                kind="snapshot",
                rel_path=rel,
                size=len(data),
                sha256="x",
                mime="image/jpeg",
            )
        )
        return CaptureCommandReply(study_id=self.study_id, media_id=str(media_id))


async def serve_peers(bus: Bus) -> None:
    """Worklist and sender contracts the pages use."""
    item = WorklistItem(
        patient_name="DOE^JANE",
        patient_id="PID-77",
        patient_birth_date="19800102",
        patient_sex="F",
        accession_number="ACC-77",
        requested_procedure_id="RP7",
        requested_procedure_description="Gastroscopy",
        study_instance_uid="1.2.826.0.1.3680043.8.498.77",
        scheduled_procedure_step_start_date="20261129",
    )

    async def query(_: WorklistQuery) -> Reply:
        return WorklistQueryReply(items=[item])

    async def servers(_: WorklistServersList) -> Reply:
        return WorklistServersReply(
            servers=[
                WorklistServer(id="ris", name="RIS", host="127.0.0.1", port=11112, called_ae="RIS")
            ]
        )

    async def wl_echo(_: WorklistEcho) -> Reply:
        return WorklistEchoReply(reachable=True, rtt_ms=3.0)

    async def check_item(req: WorklistCheckItem) -> Reply:
        return WorklistCheckItemReply(item=req.item)

    async def reconcile(req: CatalogReconcile) -> Reply:
        return CatalogReconcileReply(
            study_id=req.study_id, study_instance_uid=item.study_instance_uid
        )

    async def destinations(_: DestinationListRequest) -> Reply:
        return DestinationListReply(
            destinations=[
                Destination(
                    id=str(uuid.UUID(int=7)),
                    name="PACS",
                    ae_title="PACS",
                    host="127.0.0.1",
                    port=104,
                )
            ]
        )

    async def echo(_: EchoRequest) -> Reply:
        return EchoReply(reachable=True, rtt_ms=2.0)

    for request_type, handler in [
        (WorklistQuery, query),
        (WorklistServersList, servers),
        (WorklistEcho, wl_echo),
        (WorklistCheckItem, check_item),
        (CatalogReconcile, reconcile),
        (DestinationListRequest, destinations),
        (EchoRequest, echo),
    ]:
        await bus.serve(request_type, handler)  # type: ignore[arg-type]
    await bus.publish_core(capture_heartbeat("or1"))
    await bus.publish_core(
        ServiceHeartbeat(
            service="scp",
            instance="scp-1",
            version="1",
            state="up",
            started_at=dt.datetime.now(dt.UTC),
            detail={"ae_title": "CINEBRIDGE", "ports": "11112"},
        )
    )
    await bus.nc.flush()


@contextlib.asynccontextmanager
async def mjpeg_server() -> AsyncIterator[str]:
    """A capture-like preview endpoint: `/preview/<source>.mjpg`, 2 frames per second."""
    frame = jpeg()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; "
                b"boundary=frame\r\nConnection: close\r\n\r\n"
            )
            for _ in range(120):
                writer.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                    + str(len(frame)).encode()
                    + b"\r\n\r\n"
                    + frame
                    + b"\r\n"
                )
                await writer.drain()
                await asyncio.sleep(0.5)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


@contextlib.asynccontextmanager
async def gateway_with_room(
    gateway_factory: Any, peer_bus: Bus
) -> AsyncIterator[tuple[RunningGateway, FakeRoom]]:
    """A gateway whose room `or1` is a FakeRoom, with an MJPEG preview of the test's own."""
    async with mjpeg_server() as preview:
        gw = await gateway_factory(gateway_preview_upstreams={"or1": preview})
        room = FakeRoom(peer_bus, gw.ctx.pool, MediaStore(gw.settings.media_root))
        await room.start()
        yield gw, room


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"gateway-{name}.png"), full_page=True)


async def test_operator_workflow_in_the_browser(gateway_factory: Any, peer_bus: Bus) -> None:
    async with mjpeg_server() as preview:
        gw = await gateway_factory(gateway_preview_upstreams={"or1": preview})
        room = FakeRoom(peer_bus, gw.ctx.pool, MediaStore(gw.settings.media_root))
        await room.start()
        await serve_peers(peer_bus)
        try:
            # The log-in form itself is part of the workflow: the page starts logged out.
            async with ui_page(gw.url, user=None) as page:
                await run_workflow(page, gw, room)
        finally:
            for running, task in gateway_factory.running:
                running.ctx.stop.set()
                await asyncio.wait_for(task, 15)


async def run_workflow(page: Page, gw: Any, room: FakeRoom) -> None:
    await expect(page.locator("#login-form")).to_be_visible()
    await shot(page, "01-login")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", "wrong")
    await page.click("#login-button")
    await expect(page.locator("#toast")).to_contain_text("wrong user name or password")
    await expect(page.locator("#logout")).to_be_hidden()  # no nav on the login page
    await page.fill("input[name=password]", ADMIN_PASSWORD)
    await page.click("#login-button")
    await expect(page.locator("#live")).to_have_text("live", timeout=10_000)
    await expect(page.locator("#toast")).to_be_hidden()  # the stale error went with success
    icon = await page.get_attribute("link[rel=icon]", "href")
    assert icon and (await page.request.get(gw.url + icon)).ok
    await expect(page.locator(".source h3")).to_have_text("cam1")
    await shot(page, "02-room-empty")

    # WORKLIST dialog: search, start the study from the item.
    await page.click("#nav-worklist")
    await page.fill("#worklist-form input[name=patient_name]", "DOE*")
    await page.click("#worklist-search")
    await expect(page.locator("#worklist-results td").first).to_have_text("DOE, JANE")
    await shot(page, "03-worklist")
    await page.click("#worklist-results button:text('Start study')")
    await expect(page.locator("#study-patient")).to_have_text("DOE, JANE")
    assert room.study_id is not None

    # Acquire: the Snapshot button, then the pedal key; thumbnails arrive by live events.
    await page.click("[data-action=snapshot]")
    await expect(page.locator("#thumbs .thumb")).to_have_count(1, timeout=10_000)
    await page.keyboard.press("s")
    await expect(page.locator("#thumbs .thumb")).to_have_count(2, timeout=10_000)
    await page.keyboard.press("r")
    await expect(page.locator("[data-action=record_stop]")).to_be_visible(timeout=10_000)
    await page.keyboard.press("r")
    await expect(page.locator("#thumbs .thumb")).to_have_count(3, timeout=10_000)
    assert room.commands == ["snapshot", "snapshot", "record_start", "record_stop"]
    await expect(page.locator(".source img.preview")).to_have_js_property("complete", True)
    width = await page.eval_on_selector(".source img.preview", "img => img.naturalWidth")
    assert width == 320, "the MJPEG preview is relayed through the gateway"
    await shot(page, "04-room-study")

    # Save: one convert job per media item.
    await page.click("#save-button")
    await expect(page.locator("#toast")).to_contain_text("Saving 3 item(s)")
    pending = await gw.ctx.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE subject = 'cb.job.converter.convert'"
    )
    assert pending == 3

    # Forward dialog.
    await page.click("#forward-button")
    await expect(page.locator("#forward-dialog")).to_contain_text("PACS (PACS@127.0.0.1:104)")
    await shot(page, "05-forward")
    await page.click("#forward-go")  # nothing ticked: the dialog asks for a destination
    await expect(page.locator("#toast")).to_contain_text("Tick the destinations")
    await page.check("#forward-dialog input[type=checkbox]")
    await page.click("#forward-go")
    await expect(page.locator("#toast")).to_contain_text("Forward queued")

    # PATIENT form: edit (statement §8.1.5 unlinks the worklist study).
    await page.click("button:text('Edit patient')")
    await expect(page.locator("#patient-form")).to_contain_text("§8.1.5")
    await page.fill("#patient-form input[name=patient_name]", "DOE^JANET")
    await shot(page, "06-patient")
    await page.click("#patient-submit")
    await expect(page.locator("#study-patient")).to_have_text("DOE, JANET")
    await expect(page.locator("#study-card")).to_contain_text("edited")

    # WORKLIST on the edited (now unlinked) study: link it to the item again (reconcile).
    await page.click("#nav-worklist")
    await page.fill("#worklist-form input[name=patient_name]", "DOE*")
    await page.click("#worklist-search")
    await page.click("#worklist-results button:text('Use for current study')")
    await expect(page.locator("#toast")).to_contain_text("linked to the worklist item")
    await expect(page.locator("#study-card")).to_be_visible()

    # LOCAL search finds it, non-converted until the converter has run.
    await page.click("#nav-local")
    await expect(page.locator("#local-results tr[data-study]")).to_have_count(1)
    await expect(page.locator("#local-results")).to_contain_text("non-converted")
    await shot(page, "07-local")

    # Settings: change a setting, press Echo.
    await page.click("#nav-settings")
    await page.fill("#station-form input[name=station_name]", "OR1-TOWER")
    await page.click("#station-save")
    await expect(page.locator("#toast")).to_contain_text("Settings saved")
    await page.click("#destinations button.echo")
    await expect(page.locator("#destinations .echo-result")).to_contain_text("ok")
    await page.click("#worklist-servers button.echo")
    await expect(page.locator("#worklist-servers .echo-result")).to_contain_text("ok")
    await expect(page.locator("#local-scp")).to_contain_text("CINEBRIDGE")
    await page.click("#local-scp button.echo")
    await expect(page.locator("#local-scp .echo-result")).to_contain_text("ok")
    await shot(page, "08-settings")
    station = await gw.ctx.pool.fetchval(
        "SELECT value FROM station_settings WHERE key = 'station_name'"
    )
    assert station == "OR1-TOWER"

    # Ops dashboard.
    await page.click("#nav-ops")
    await expect(page.locator("#health")).to_contain_text("cap-or1")
    await expect(page.locator("#sources")).to_contain_text("cam1")
    await shot(page, "09-ops")
