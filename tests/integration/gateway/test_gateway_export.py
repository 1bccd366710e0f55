"""Exports of a study through the gateway, written by a real converter service: MP4/JPEG read
back by ffprobe, DICOM media read back by DCMTK (dcmdump, dciodvfy), a de-identified copy
scanned element by element for the patient's seeded values, the viewer refused, every export
audited, and the `cinebridge export` command."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import subprocess
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cinebridge_cli.__main__ import main as cli_main
from cinebridge_common.bus import Bus
from cinebridge_common.store import MediaStore, sha256_file
from cinebridge_converter import app as converter_app
from cinebridge_converter.settings import ConverterSettings
from cinebridge_testkit import require_tool, wait_for
from cinebridge_testkit.browser import announce_room, ui_page
from cinebridge_testkit.media import make_still, make_video
from playwright.async_api import expect
from pydicom import dcmread
from pydicom.dataset import Dataset

from .conftest import RunningGateway
from .test_gateway_ui import FakeRoom, shot

pytestmark = pytest.mark.integration

SEEDED = {
    "patient_name": "Quarrington^Philomena",
    "patient_id": "PID-7788-99",
    "patient_birth_date": "19610213",
    "accession_number": "ACC445566",
    "study_description": "Colonoscopy Quarrington",
}
#: Values the worklist item carries into nested sequences of the station's objects (PS3.18 F.2
#: DICOM JSON): a referenced study, the request's IDs, the issuer, the history.
REFERENCED_UID = "1.2.826.0.1.3680043.8.498.7788991"
ISSUER = "Saint Ursula Infirmary"
WORKLIST_ITEM = {
    "patient_name": SEEDED["patient_name"],
    "patient_id": SEEDED["patient_id"],
    "patient_birth_date": SEEDED["patient_birth_date"],
    "accession_number": SEEDED["accession_number"],
    "requested_procedure_id": "RP-778899",
    "requested_procedure_description": SEEDED["study_description"],
    "modality": "ES",
    "dataset": {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": SEEDED["patient_name"]}]},
        "00100020": {"vr": "LO", "Value": [SEEDED["patient_id"]]},
        "00100021": {"vr": "LO", "Value": [ISSUER]},
        "00080050": {"vr": "SH", "Value": [SEEDED["accession_number"]]},
        "00401001": {"vr": "SH", "Value": ["RP-778899"]},
        "00321060": {"vr": "LO", "Value": [SEEDED["study_description"]]},
        "001021B0": {"vr": "LT", "Value": ["Philomena Quarrington, seen 19610213"]},
        "00081110": {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": ["1.2.840.10008.3.1.2.3.1"]},
                    "00081155": {"vr": "UI", "Value": [REFERENCED_UID]},
                }
            ],
        },
        "00400100": {
            "vr": "SQ",
            "Value": [
                {
                    "00080060": {"vr": "CS", "Value": ["ES"]},
                    "00400009": {"vr": "SH", "Value": ["SPS-778899"]},
                    "00400007": {"vr": "LO", "Value": ["Colonoscopy for Quarrington"]},
                }
            ],
        },
    },
}
#: 3 s at 25 frames/s: what ffprobe must find in the exported MP4.
FRAMES, RATE = 75, 25


@pytest.fixture
async def station(gateway: RunningGateway, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The gateway plus a converter on the same media store, and a converted study: one
    recording and one snapshot, captured as the capture service stores them."""
    usb = tmp_path / "usb"
    usb.mkdir()
    settings = ConverterSettings(
        nats_url=gateway.settings.nats_url,
        database_url=gateway.settings.database_url,
        media_root=gateway.settings.media_root,
        instance_id=f"conv-{uuid.uuid4().hex[:6]}",
        converter_x264_preset="ultrafast",
        converter_export_folder=usb,
    )
    task = asyncio.create_task(converter_app.run(settings))
    admin = await gateway.login()
    try:
        study = await _converted_study(gateway, admin, tmp_path)
        yield {"admin": admin, "study": study, "usb": usb}
    finally:
        await admin.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 15)


async def _converted_study(gw: RunningGateway, admin: Any, tmp: Path) -> dict[str, Any]:
    body = {"origin": "worklist", "worklist_item": WORKLIST_ITEM}
    created = await admin.post("/api/v1/studies", json=body)
    assert created.status_code in (200, 201), created.text
    study = created.json()
    store = MediaStore(gw.settings.media_root)
    video = make_video(tmp / "rec.mp4", frames=FRAMES, rate=RATE)
    still = make_still(tmp / "snap.jpg")
    for kind, path, mime in (("recording", video, "video/mp4"), ("snapshot", still, "image/jpeg")):
        rel = store.new_relative("media", path.suffix.lstrip("."))
        sha = store.write_bytes(rel, path.read_bytes())
        await gw.ctx.pool.execute(
            """INSERT INTO media (id, study_id, room, source, kind, rel_path, size, sha256, mime)
               VALUES ($1, $2, 'or1', 'tower', $3, $4, $5, $6, $7)""",
            uuid.uuid4(),
            uuid.UUID(study["id"]),
            kind,
            rel,
            path.stat().st_size,
            sha,
            mime,
        )
    saved = await admin.post(f"/api/v1/studies/{study['id']}/save", json={"auto_send": False})
    assert saved.status_code in (200, 202), saved.text

    async def converted() -> bool:
        count = await gw.ctx.pool.fetchval(
            "SELECT count(*) FROM instances WHERE study_id = $1", uuid.UUID(study["id"])
        )
        return count == 2

    await wait_for(converted, timeout_s=120, what="both media items converted")
    return dict(study)


async def _export(admin: Any, study_id: str, **body: Any) -> dict[str, Any]:
    reply = await admin.post(f"/api/v1/studies/{study_id}/export", json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def _download(admin: Any, result: dict[str, Any], dest: Path) -> Path:
    reply = await admin.get(result["download_url"], timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:
        archive.extractall(dest)
    return dest


def _ffprobe(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [
            require_tool("ffprobe"),
            "-v",
            "error",
            "-of",
            "json",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout))


def _moov_before_mdat(path: Path) -> bool:
    """+faststart: the top-level moov box comes before mdat (ISO/IEC 14496-12 boxes)."""
    data, offset, order = path.read_bytes(), 0, []
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        order.append(data[offset + 4 : offset + 8])
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return b"moov" in order and b"mdat" in order and order.index(b"moov") < order.index(b"mdat")


async def test_mp4_export_plays_with_the_right_duration(
    station: dict[str, Any], tmp_path: Path
) -> None:
    admin, study = station["admin"], station["study"]
    result = await _export(admin, study["id"], kind="mp4")
    assert result["files"] == 2 and result["download_url"], result
    out = await _download(admin, result, tmp_path / "mp4")
    assert sorted(p.name for p in out.iterdir()) == ["IMG001.jpg", "REC001.mp4"]
    probe = _ffprobe(out / "REC001.mp4")
    [video] = [s for s in probe["streams"] if s["codec_type"] == "video"]
    assert video["codec_name"] == "h264"
    assert abs(float(probe["format"]["duration"]) - FRAMES / RATE) < 0.1, probe["format"]
    assert int(video["nb_frames"]) == FRAMES
    assert _moov_before_mdat(out / "REC001.mp4")
    assert (out / "IMG001.jpg").read_bytes()[:2] == b"\xff\xd8"

    # Burned-in caption to the export folder: re-encoded, same duration; side-car: text files.
    burned = await _export(admin, study["id"], kind="mp4", caption="burned", target="folder")
    folder = Path(burned["folder"])
    assert folder.parent == station["usb"] and burned.get("download_url") is None
    probe = _ffprobe(folder / "REC001.mp4")
    assert abs(float(probe["format"]["duration"]) - FRAMES / RATE) < 0.1, probe["format"]
    assert _moov_before_mdat(folder / "REC001.mp4")
    sidecar = await _export(admin, study["id"], kind="mp4", caption="sidecar")
    side = await _download(admin, sidecar, tmp_path / "sidecar")
    caption = (side / "REC001.txt").read_text(encoding="utf-8")
    assert "Quarrington, Philomena" in caption and SEEDED["patient_id"] in caption
    assert (side / "IMG001.txt").read_text(encoding="utf-8") == caption


def _referenced_files(dump: str) -> list[str]:
    return [m.replace("\\", "/") for m in re.findall(r"\(0004,1500\) CS \[([^\]]+)\]", dump)]


async def test_dicomdir_export_is_read_back_by_dcmtk(
    gateway: RunningGateway, station: dict[str, Any], tmp_path: Path
) -> None:
    admin, study = station["admin"], station["study"]
    result = await _export(admin, study["id"], kind="dicomdir")
    out = await _download(admin, result, tmp_path / "media")
    dump = subprocess.run(
        [require_tool("dcmdump"), "+L", str(out / "DICOMDIR")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dump.returncode == 0, dump.stderr
    records = re.findall(r"\(0004,1430\) CS \[(\w+)\]", dump.stdout)
    assert records == ["PATIENT", "STUDY", "SERIES", "IMAGE", "IMAGE"], records
    referenced = _referenced_files(dump.stdout)
    assert len(referenced) == 2
    uids = set()
    for file_id in referenced:
        # PS3.10 8.5 / PS3.11: up to 8 components, each 1-8 of A-Z 0-9 _.
        assert all(re.fullmatch(r"[A-Z0-9_]{1,8}", part) for part in file_id.split("/")), file_id
        path = out / file_id
        assert path.is_file(), f"DICOMDIR names {file_id}, which is missing"
        each = subprocess.run(
            [require_tool("dcmdump"), "-q", "+P", "0008,0018", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert each.returncode == 0 and "SOPInstanceUID" in each.stdout, each.stderr
        uids.add(re.findall(r"\[([0-9.]+)\]", each.stdout)[0])
    assert uids == set(re.findall(r"\(0004,1511\) UI \[([0-9.]+)\]", dump.stdout))
    stored = await gateway.ctx.pool.fetch(
        "SELECT sha256 FROM instances WHERE study_id = $1", uuid.UUID(study["id"])
    )
    exported = {sha256_file(out / file_id) for file_id in referenced}
    assert exported == {r["sha256"] for r in stored}, "each instance byte for byte"
    verified = subprocess.run(
        [require_tool("dciodvfy"), str(out / "DICOMDIR")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "BasicDirectory" in verified.stdout + verified.stderr
    assert not re.search(r"^Error", verified.stderr, re.MULTILINE), verified.stderr


def _every_value(ds: Dataset) -> list[tuple[str, str]]:
    """(tag, text) of every element: nested sequences, private tags and the file meta too."""
    found: list[tuple[str, str]] = []

    def visit(_: Dataset, elem: Any) -> None:
        if elem.VR in ("OB", "OW", "OF", "OD", "UN") or elem.VR == "SQ":
            return
        found.append((str(elem.tag), str(elem.value)))

    ds.walk(visit)
    ds.file_meta.walk(visit)
    return found


async def test_deidentified_copy_holds_no_seeded_value(
    gateway: RunningGateway, station: dict[str, Any], tmp_path: Path
) -> None:
    admin, study = station["admin"], station["study"]
    originals = await station_uids(gateway, study["id"])
    result = await _export(admin, study["id"], kind="deid", clean_descriptors=True)
    assert any("Burned In Annotation" in w for w in result["warnings"]), result["warnings"]
    out = await _download(admin, result, tmp_path / "deid")
    seeded = [
        SEEDED["patient_name"],
        "Quarrington",
        "Philomena",
        SEEDED["patient_id"],
        SEEDED["patient_birth_date"],
        SEEDED["accession_number"],
        ISSUER,
        REFERENCED_UID,
        "RP-778899",
        "SPS-778899",
        *originals,
    ]
    # The station's own objects carry every seeded value (nested ones too): the scan can fail.
    store = MediaStore(gateway.settings.media_root)
    rows = await gateway.ctx.pool.fetch(
        "SELECT rel_path FROM instances WHERE study_id = $1", uuid.UUID(study["id"])
    )
    texts = " ".join(
        text for r in rows for _, text in _every_value(dcmread(store.resolve(r["rel_path"])))
    ).lower()
    assert [v for v in seeded if v.lower() not in texts] == []
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 3  # DICOMDIR and two instances
    study_uids = set()
    for path in files:
        ds = dcmread(path)
        for tag, text in _every_value(ds):
            for value in seeded:
                assert value.lower() not in text.lower(), f"{path.name} {tag} keeps {value!r}"
        if path.name == "DICOMDIR":
            continue
        study_uids.add(ds.StudyInstanceUID)
        assert ds.PatientIdentityRemoved == "YES"
        codes = [
            (c.CodeValue, c.CodingSchemeDesignator) for c in ds.DeidentificationMethodCodeSequence
        ]
        assert ("113100", "DCM") in codes and ("113105", "DCM") in codes
        assert ds.LongitudinalTemporalInformationModified == "REMOVED"
        assert ds.StudyDescription == "Colonoscopy"  # Clean Descriptors: kept, cleaned
    assert len(study_uids) == 1, "one new Study Instance UID for the whole export"

    # Another export of the same study gets other UIDs (consistent within one export only).
    again = await _download(admin, await _export(admin, study["id"], kind="deid"), tmp_path / "d2")
    other = {dcmread(p).StudyInstanceUID for p in again.rglob("IM*")}
    assert other and other.isdisjoint(study_uids)


async def station_uids(gw: RunningGateway, study_id: str) -> list[str]:
    """The study's, series' and instances' UIDs as the station wrote them."""
    rows = await gw.ctx.pool.fetch(
        "SELECT study_instance_uid, series_instance_uid, sop_instance_uid FROM instances"
        " WHERE study_id = $1",
        uuid.UUID(study_id),
    )
    assert len(rows) == 2
    return sorted({uid for row in rows for uid in row.values()})


async def test_viewer_refused_and_every_export_audited(
    station: dict[str, Any], gateway: RunningGateway
) -> None:
    admin, study = station["admin"], station["study"]
    tokens = {}
    for role in ("viewer", "operator"):
        made = await admin.post("/api/v1/tokens", json={"name": f"x-{role}", "role": role})
        assert made.status_code == 201, made.text
        tokens[role] = made.json()["token"]
    operator = gateway.client(headers={"Authorization": f"Bearer {tokens['operator']}"})
    viewer = gateway.client(headers={"Authorization": f"Bearer {tokens['viewer']}"})
    async with operator, viewer:
        done = await operator.post(
            f"/api/v1/studies/{study['id']}/export", json={"kind": "dicomdir"}, timeout=300
        )
        assert done.status_code == 200, done.text
        url = done.json()["download_url"]
        refused = await viewer.post(f"/api/v1/studies/{study['id']}/export", json={"kind": "mp4"})
        assert refused.status_code == 403
        assert (await viewer.get(url)).status_code == 403
        assert (await operator.get(url)).status_code == 200
        missing = await operator.post(
            f"/api/v1/studies/{uuid.uuid4()}/export", json={"kind": "mp4"}
        )
        assert missing.status_code == 404
    audit = (await admin.get("/api/v1/audit", params={"study_id": study["id"]})).json()
    exported = [a for a in audit if a["action"] == "study_exported"]
    assert len(exported) == 1, audit
    [row] = exported
    assert row["actor"] == "token:x-operator" and row["detail"]["kind"] == "dicomdir"
    assert row["patient_id"] == SEEDED["patient_id"] and row["target"] == "download"
    assert row["detail"]["export_id"] in url
    downloads = (await admin.get("/api/v1/audit", params={"action": "export_downloaded"})).json()
    assert [d["actor"] for d in downloads] == ["token:x-operator"]
    assert downloads[0]["patient_id"] == SEEDED["patient_id"], "the download names its patient"


async def test_refused_export_is_audited_with_its_reason(
    gateway: RunningGateway, station: dict[str, Any]
) -> None:
    admin = station["admin"]
    empty = (await admin.post("/api/v1/studies", json={"origin": "form", "patient": SEEDED})).json()
    refused = await admin.post(f"/api/v1/studies/{empty['id']}/export", json={"kind": "dicomdir"})
    assert refused.status_code == 409
    assert "save it first" in refused.json()["error"]["message"]
    audit = (await admin.get("/api/v1/audit", params={"study_id": empty["id"]})).json()
    failed = [a for a in audit if a["action"] == "study_export_failed"]
    assert len(failed) == 1 and "save it first" in failed[0]["detail"]["error"]


async def test_cli_export_unpacks_into_the_folder(
    gateway: RunningGateway, station: dict[str, Any], tmp_path: Path
) -> None:
    admin, study = station["admin"], station["study"]
    made = await admin.post("/api/v1/tokens", json={"name": "cli", "role": "operator"})
    token = made.json()["token"]
    lines: list[str] = []
    argv = ["--url", gateway.url, "--token", token, "export", study["id"]]
    code = await asyncio.to_thread(
        cli_main, [*argv, "--kind", "dicomdir", "--out", str(tmp_path / "cli")], out=lines.append
    )
    assert code == 0, lines
    assert (tmp_path / "cli" / "DICOMDIR").is_file()
    assert lines[0].startswith("exported 3 file(s)"), lines
    assert not list((tmp_path / "cli").glob("*.part"))
    code = await asyncio.to_thread(cli_main, [*argv, "--kind", "mp4"], out=lines.append)
    assert code == 2, "neither --out nor --to-folder"


async def test_export_dialog_in_the_browser(
    gateway: RunningGateway, station: dict[str, Any], peer_bus: Bus
) -> None:
    """The Room page's Export action: DICOM media downloaded, de-identified with its warning."""
    room = FakeRoom(peer_bus, gateway.ctx.pool, MediaStore(gateway.settings.media_root))
    room.study_id = station["study"]["id"]
    await room.start()
    await announce_room(peer_bus, station["admin"])
    async with ui_page(gateway.url) as page:
        await expect(page.locator("#study-patient")).to_have_text("Quarrington, Philomena")
        await page.click("#export-button")
        dialog = page.locator("#export-dialog")
        await expect(dialog).to_contain_text("Export — Quarrington, Philomena")
        await expect(page.locator("#export-deid")).to_be_hidden()
        await dialog.locator("input[name=kind][value=dicomdir]").check()
        await page.click("#export-go")
        link = page.locator("#export-download")
        await expect(link).to_be_visible(timeout=120_000)
        await expect(dialog).to_contain_text("3 file(s)")
        got = await page.request.get(gateway.url + str(await link.get_attribute("href")))
        assert got.ok and (await got.body())[:2] == b"PK"
        await dialog.locator("input[name=kind][value=deid]").check()
        await expect(page.locator("#export-deid")).to_be_visible()
        await dialog.locator("input[name=clean_descriptors]").check()
        await page.click("#export-go")
        await expect(dialog.locator(".export-warning").first).to_contain_text(
            "Burned In Annotation", timeout=120_000
        )
        await shot(page, "export-dialog")
    audit = (
        await station["admin"].get("/api/v1/audit", params={"study_id": station["study"]["id"]})
    ).json()
    kinds = sorted(a["detail"]["kind"] for a in audit if a["action"] == "study_exported")
    assert kinds == ["deid", "dicomdir"]
    newest = next(a for a in audit if a["action"] == "study_exported")
    assert newest["detail"]["kind"] == "deid" and newest["detail"]["clean_descriptors"] is True
