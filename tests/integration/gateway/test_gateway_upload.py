""" "Add file": an external video or image added to the room's current study, with the real
capture service (it decides the current study) and the real converter (Save turns the upload
into DICOM like a capture). Over the API: no current study, not media, too large (declared and
streamed), viewer refused, then an MP4 with B-frames and a JPEG become instances of the right
study that dciodvfy passes with 0 errors; in headless Chromium: the Room page's "Add file"."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cinebridge_common.embedded import free_port
from cinebridge_testkit import require_tool, stop_process, wait_for
from cinebridge_testkit.browser import capture_room, log_tail, ui_page
from cinebridge_testkit.media import make_still, make_video
from playwright.async_api import expect

from .conftest import RunningGateway
from .test_gateway_admin import login_changed, make_user
from .test_gateway_ui import shot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
LIMIT = 2_000_000


def start_converter(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    settings = {
        "CB_INSTANCE_ID": f"upload-converter-{uuid.uuid4().hex[:6]}",
        "CB_HEALTH_PORT": str(free_port()),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cinebridge_converter"],
            env={**os.environ, **env, **settings},
            stdout=out,
            stderr=out,
        )


@pytest.fixture
async def station(
    gateway_factory: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    """A gateway with a 2 MB upload limit, the capture service of room or1 and a converter."""
    require_tool("ffmpeg")
    preview_port = free_port()
    gw = await gateway_factory(
        gateway_upload_max_bytes=LIMIT,
        gateway_preview_upstreams={"or1": f"http://127.0.0.1:{preview_port}"},
    )
    env, logs = gw.station_env(), (tmp_path / "capture.log", tmp_path / "converter.log")
    converter = start_converter(env, logs[1])
    api = await gw.login()
    try:
        async with capture_room(api, env, logs[0], preview_port=preview_port):
            assert converter.poll() is None, log_tail(logs[1])
            yield gw
    except BaseException:
        print(log_tail(logs[1]))
        raise
    finally:
        await api.aclose()
        await asyncio.to_thread(stop_process, converter, 20)
        for running, task in gateway_factory.running:  # type: ignore[attr-defined]
            running.ctx.stop.set()
            await asyncio.wait_for(task, 15)


async def upload(client: httpx.AsyncClient, path: Path, **kw: Any) -> httpx.Response:
    return await client.post(
        "/api/v1/rooms/or1/upload",
        params={"filename": path.name},
        content=kw.pop("content", None) or path.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
        **kw,
    )


def leftovers(gw: RunningGateway) -> list[Path]:
    """Files in the media store (media/ and the temporary area): nothing half-written."""
    root = gw.settings.media_root
    return [p for p in root.rglob("*") if p.is_file()]


async def test_upload_api_refusals_and_conversion(station: RunningGateway, tmp_path: Path) -> None:
    gw = station
    dciodvfy = require_tool("dciodvfy")
    video = make_video(
        tmp_path / "tower.mp4", frames=30, options={"preset": "ultrafast", "bf": "2"}
    )
    still = make_still(tmp_path / "photo.jpg", width=320, height=240)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 100)
    api = await gw.login()
    try:
        none = await upload(api, video)
        assert none.status_code == 409, none.text
        assert none.json()["error"]["code"] == "no_current_study"

        started = await api.post(
            "/api/v1/rooms/or1/study",
            json={"origin": "form", "patient": {"patient_name": "UP^LOAD", "patient_id": "U-1"}},
        )
        assert started.status_code == 201, started.text
        study_id = started.json()["study"]["id"]

        bad = await upload(api, text)
        assert bad.status_code == 415, bad.text
        assert bad.json()["error"]["code"] == "not_media"
        declared = await upload(api, video, content=b"\0" * (LIMIT + 1))
        assert declared.status_code == 413, declared.text

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streamed
            for _ in range(LIMIT // 65536 + 2):
                yield b"\0" * 65536

        streamed = await api.post(
            "/api/v1/rooms/or1/upload",
            content=chunks(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert streamed.status_code == 413, streamed.text
        assert leftovers(gw) == []  # refused uploads leave nothing, not even a temporary file

        await make_user(api, "watcher", "viewer")
        viewer = await login_changed(gw, "watcher", "Watcher-Own-Pass-2")
        refused = await upload(viewer, still)
        await viewer.aclose()
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"

        added = [await upload(api, path) for path in (video, still)]
        assert [r.status_code for r in added] == [201, 201], [r.text for r in added]
        assert [r.json()["kind"] for r in added] == ["recording", "snapshot"]
        assert {r.json()["study_id"] for r in added} == {study_id}
        saved = await api.post(f"/api/v1/studies/{study_id}/save", json={})
        assert saved.status_code == 202 and saved.json()["accepted"] == 2, saved.text
    finally:
        await api.aclose()

    async def converted() -> list[Any] | None:
        rows = await gw.ctx.pool.fetch(
            """SELECT i.rel_path, i.frames, i.study_instance_uid, m.state, m.error
               FROM media m LEFT JOIN instances i ON i.media_id = m.id
               WHERE m.study_id = $1""",
            uuid.UUID(study_id),
        )
        assert all(r["state"] != "failed" for r in rows), [dict(r) for r in rows]
        return list(rows) if rows and all(r["rel_path"] for r in rows) else None

    rows = await wait_for(converted, 180, interval_s=0.5, what="both uploads converted")
    study_uid = await gw.ctx.pool.fetchval(
        "SELECT study_instance_uid FROM studies WHERE id = $1", uuid.UUID(study_id)
    )
    assert {r["study_instance_uid"] for r in rows} == {study_uid}
    assert sorted(r["frames"] or 0 for r in rows) == [0, 30]
    for row in rows:
        path = gw.settings.media_root / row["rel_path"]
        checked = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        errors = [
            x for x in (checked.stdout + checked.stderr).splitlines() if x.startswith("Error")
        ]
        assert errors == [], errors
    audit = await gw.ctx.pool.fetch(
        "SELECT detail FROM gateway_audit_log WHERE action = 'media_uploaded' AND study_id = $1",
        uuid.UUID(study_id),
    )
    assert sorted(a["detail"]["filename"] for a in audit) == ["photo.jpg", "tower.mp4"]


async def test_add_file_in_the_browser(station: RunningGateway, tmp_path: Path) -> None:
    gw = station
    video = make_video(tmp_path / "endoscope.mp4", frames=20, options={"preset": "ultrafast"})
    big = tmp_path / "too-big.mp4"
    big.write_bytes(b"\0" * (LIMIT + 1))
    async with ui_page(gw.url, at="#/room") as page:
        await page.click("#new-study")
        await page.fill("#patient-form input[name=patient_name]", "FILE^ADDED")
        await page.fill("#patient-form input[name=patient_id]", "F-1")
        await page.click("#patient-submit")
        await expect(page.locator("#study-patient")).to_have_text("FILE, ADDED", timeout=15_000)

        await page.set_input_files("#add-file-input", str(big))
        await expect(page.locator("#toast")).to_contain_text(
            "too-big.mp4 not added", timeout=15_000
        )
        await expect(page.locator("#toast")).to_contain_text("upload limit")
        await page.set_input_files("#add-file-input", str(video))
        await expect(page.locator("#toast")).to_contain_text(
            "endoscope.mp4 added to the study as a video", timeout=30_000
        )
        await expect(page.locator("#thumbs .thumb")).to_have_count(1, timeout=15_000)
        await shot(page, "upload-added")
    media = await gw.ctx.pool.fetch(
        """SELECT m.source, m.kind, s.patient_name FROM media m
           JOIN studies s ON s.id = m.study_id"""
    )
    assert [(m["source"], m["kind"], m["patient_name"]) for m in media] == [
        ("upload", "recording", "FILE^ADDED")
    ]
