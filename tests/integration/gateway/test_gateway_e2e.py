"""The whole loop in headless Chromium with every real service: worklist server (DCMTK
`wlmscpfs` with the worklist service), capture from a test pattern, converter, sender, and a
real PACS (DCMTK `storescp`). Log in, start a study from a worklist item, take snapshots and a
short recording, save, see each instance reach the PACS with its delivery turning "sent", edit
patient data, forward, change a setting and press Echo. Screenshots: artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.embedded import EmbeddedNats, free_port, wait_port
from cinebridge_testkit import require_tool, wait_for
from cinebridge_testkit.browser import ui_page
from playwright.async_api import Page, expect

from .conftest import gateway_settings, start_gateway

pytestmark = pytest.mark.integration
SHOTS = Path(__file__).resolve().parents[3] / "artifacts" / "screenshots"
SERVICES = ("worklist", "capture", "converter", "sender")


@contextlib.contextmanager
def processes(tmp: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def spawn(
    procs: list[subprocess.Popen[bytes]], args: list[str], log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    out.close()
    procs.append(proc)
    return proc


def service_env(
    nats_url: str, database_url: str, media: Path, pacs_port: int, wl_port: int, preview_port: int
) -> dict[str, str]:
    return {
        **os.environ,
        "CB_NATS_URL": nats_url,
        "CB_DATABASE_URL": database_url,
        "CB_MEDIA_ROOT": str(media),
        "CB_HEARTBEAT_INTERVAL_S": "1",
        "CB_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "CB_WORKLIST_SEED_SERVERS": json.dumps(
            [
                {
                    "id": "ris",
                    "name": "RIS",
                    "host": "127.0.0.1",
                    "port": wl_port,
                    "called_ae": "CBWORKLIST",
                }
            ]
        ),
        "CB_CAPTURE_ROOM": "or1",
        "CB_CAPTURE_SOURCES": json.dumps(
            [{"name": "endo", "url": "lavfi:testsrc2=size=320x240:rate=10"}]
        ),
        "CB_CAPTURE_PREVIEW_PORT": str(preview_port),
        "CB_CAPTURE_DISK_RESERVE_BYTES": "0",
        "CB_SENDER_SEED_DESTINATIONS": json.dumps(
            [{"name": "PACS", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}]
        ),
    }


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"gateway-e2e-{name}.png"), full_page=True)


async def test_whole_loop_with_real_services(database_url: str, tmp_path: Path) -> None:
    require_tool("chromium")  # before any service starts
    storescp, wlmscpfs = require_tool("storescp"), require_tool("wlmscpfs")
    require_tool("dump2dcm")
    # A NATS of its own: the services' durable consumers must not meet other tests' leftovers.
    nats = EmbeddedNats(tmp_path / "nats")
    nats.start()
    try:
        await whole_loop(storescp, wlmscpfs, nats.url, database_url, tmp_path)
    finally:
        nats.stop()


async def whole_loop(
    storescp: str, wlmscpfs: str, nats_url: str, database_url: str, tmp: Path
) -> None:
    media, pacs_dir, wl_dir = tmp / "media", tmp / "pacs", tmp / "worklist"
    pacs_dir.mkdir()
    pacs_port, wl_port, preview_port = free_port(), free_port(), free_port()
    env = service_env(nats_url, database_url, media, pacs_port, wl_port, preview_port)
    subprocess.run(
        [sys.executable, "-m", "cinebridge_testkit.demo_worklist", str(wl_dir), "6"],
        check=True,
        env=env,
        capture_output=True,
        timeout=60,
    )
    dcmtk_env = {**env, "TCP_NODELAY": "1"}
    with processes(tmp) as procs:
        spawn(
            procs,
            [storescp, "-od", str(pacs_dir), "-aet", "PACS", "+xa", str(pacs_port)],
            tmp / "storescp.log",
            dcmtk_env,
        )
        spawn(
            procs,
            [wlmscpfs, "--data-files-path", str(wl_dir), "--keep-char-set", str(wl_port)],
            tmp / "wlmscpfs.log",
            dcmtk_env,
        )
        wait_port(pacs_port, 10)
        wait_port(wl_port, 10)
        settings = gateway_settings(
            nats_url,
            database_url,
            media,
            gateway_preview_upstreams={"or1": f"http://127.0.0.1:{preview_port}"},
        )
        gw, task = await start_gateway(settings)
        try:
            for service in SERVICES:
                spawn(
                    procs,
                    [sys.executable, "-m", f"cinebridge_{service}"],
                    tmp / f"{service}.log",
                    {**env, "CB_INSTANCE_ID": f"e2e-{service}"},
                )
            await drive_browser(gw, procs, pacs_dir, tmp)
        finally:
            gw.ctx.stop.set()
            await asyncio.wait_for(task, 15)


async def drive_browser(
    gw: Any, procs: list[subprocess.Popen[bytes]], pacs_dir: Path, tmp: Path
) -> None:
    client = await gw.login()
    try:

        async def all_up() -> bool:
            for proc in procs:
                assert proc.poll() is None, _logs(tmp)
            health = (await client.get("/api/health")).json()
            up = {i["service"] for i in health["instances"] if i["state"] == "up"}
            return set(SERVICES) <= up

        # A bound that catches a service that never comes up, not a timing of the start: on a
        # loaded machine six Python services importing at once took over a minute.
        await wait_for(all_up, 180, interval_s=0.5, what="every service up in /api/health")
        async with ui_page(gw.url) as page:
            await run_loop(page, gw, client, pacs_dir)
    except BaseException:
        print(_logs(tmp))
        raise
    finally:
        await client.aclose()


def _logs(tmp: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(tmp.glob("*.log"))
    )


async def run_loop(page: Page, gw: Any, api: Any, pacs_dir: Path) -> None:
    await expect(page.locator(".source h3")).to_have_text("endo", timeout=15_000)

    # WORKLIST: the real worklist service asks wlmscpfs; entry 2 of the demo list.
    await page.click("#nav-worklist")
    await page.fill("#worklist-form input[name=patient_name]", "TAYLOR")
    await page.click("#worklist-search")
    row = page.locator("#worklist-results tr", has_text="PID00002")
    await expect(row).to_have_count(1, timeout=30_000)
    await shot(page, "01-worklist")
    await row.locator("button:text('Start study')").click()
    await expect(page.locator("#study-card")).to_contain_text("PID00002")
    study_id = await page.get_attribute("#study-card", "data-study")

    # ACQUIRE from the test pattern: button, pedal key, a short recording.
    await expect(page.locator(".source img.preview")).to_have_js_property("complete", True)
    await page.click("[data-action=snapshot]")
    await expect(page.locator("#thumbs .thumb")).to_have_count(1, timeout=15_000)
    await page.keyboard.press("s")
    await expect(page.locator("#thumbs .thumb")).to_have_count(2, timeout=15_000)
    await page.keyboard.press("r")
    await expect(page.locator("[data-action=record_stop]")).to_be_visible(timeout=15_000)
    await page.wait_for_timeout(2000)  # the recording's length, not a wait for an event
    await page.keyboard.press("r")
    await expect(page.locator("#thumbs .thumb")).to_have_count(3, timeout=20_000)
    await expect(page.locator("#thumbs video")).to_have_count(1)
    await shot(page, "02-room-acquired")

    # SAVE: convert, then auto-send to the PACS; each delivery turns "sent" in the page.
    await page.click("#save-button")
    await expect(page.locator("#toast")).to_contain_text("Saving 3 item(s)")

    async def all_sent() -> bool:
        # Live events re-render the page; a reload also covers a missed event.
        await page.reload()
        await expect(page.locator("#thumbs .thumb")).to_have_count(3, timeout=20_000)
        badges = page.locator("#deliveries .badge")
        states = await badges.all_text_contents()
        # The study is `sent` once the catalog has also recorded every item converted (from
        # the converter's events, which may reach it after the deliveries' outcome).
        study = await page.locator("#study-card .badge").first.text_content()
        return len(states) == 3 and set(states) == {"sent"} and study == "sent"

    await wait_for(all_sent, 120, interval_s=3, what="three deliveries sent in the UI")
    await expect(page.locator("#study-card .badge").first).to_have_text("sent")
    received = [p for p in pacs_dir.iterdir() if p.is_file()]
    assert len(received) == 3, received
    await shot(page, "03-room-sent")
    await page.locator("#deliveries button:text('Attempts')").first.click()
    await expect(page.locator("#attempts-dialog")).to_contain_text("0000")
    await shot(page, "03b-attempts")
    await page.click("#attempts-dialog button:text('Close')")

    # PATIENT: edit (statement §8.1.5: unlinked from the worklist, new Study UID).
    await page.click("button:text('Edit patient')")
    await page.fill("#patient-form input[name=patient_name]", "EDITED^PATIENT")
    await shot(page, "04-patient")
    await page.click("#patient-submit")
    await expect(page.locator("#study-patient")).to_have_text("EDITED, PATIENT")

    # FORWARD to the PACS again: the sender records a second attempt per delivery.
    await page.click("#forward-button")
    await page.check("#forward-dialog input[type=checkbox]")  # none is ticked beforehand
    await page.click("#forward-go")
    await expect(page.locator("#toast")).to_contain_text("Forward queued")

    async def forwarded() -> bool:
        deliveries = (await api.get(f"/api/v1/studies/{study_id}/deliveries")).json()
        attempts = [
            (await api.get(f"/api/v1/deliveries/{d['id']}/attempts")).json() for d in deliveries
        ]
        return len(attempts) == 3 and all(len(a) >= 2 for a in attempts)

    await wait_for(forwarded, 90, interval_s=1, what="forwarded instances sent again")
    await shot(page, "05-forwarded")

    # LOCAL search shows the study sent, and the copy the local PACS... is not ours: only ours.
    await page.click("#nav-local")
    await page.fill("#local-form input[name=q]", "EDITED")
    await page.click("#local-search")
    await expect(page.locator("#local-results")).to_contain_text("sent")
    await shot(page, "06-local")

    # SETTINGS: change a setting, Echo the PACS (real C-ECHO by the sender).
    await page.click("#nav-settings")
    await page.select_option("#station-form select[name=iod]", "vl")
    await page.click("#station-save")
    await expect(page.locator("#toast")).to_contain_text("Settings saved")
    await page.click("#destinations button.echo")
    await expect(page.locator("#destinations .echo-result")).to_contain_text("ok", timeout=20_000)
    await page.click("#worklist-servers button.echo")
    await expect(page.locator("#worklist-servers .echo-result")).to_contain_text(
        "ok", timeout=20_000
    )
    await shot(page, "07-settings")

    await page.click("#nav-ops")
    await expect(page.locator("#health")).to_contain_text("converter")
    await expect(page.locator("#sources")).to_contain_text("endo")
    await shot(page, "08-ops")
