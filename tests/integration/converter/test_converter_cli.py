"""`cinebridge-convert` as hospital IT runs it: files in, DICOM files and a summary out."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cinebridge_common.embedded import EmbeddedNats, free_port
from cinebridge_common.store import MediaStore
from cinebridge_testkit import require_tool
from cinebridge_testkit.instances import dataset_bytes
from cinebridge_testkit.media import make_still, make_video
from cinebridge_testkit.sender_harness import SenderHarness, tool
from cinebridge_testkit.storage_peers import DcmtkStorescp
from pydicom import dcmread

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _command() -> list[str]:
    script = Path(sys.executable).with_name("cinebridge-convert")
    found = str(script) if script.exists() else shutil.which("cinebridge-convert")
    assert found, "the cinebridge-convert console script is not installed (make install)"
    return [found]


def test_files_become_one_study_and_failures_are_named(tmp_path: Path) -> None:
    dciodvfy = require_tool("dciodvfy")
    video = make_video(
        tmp_path / "scope.mkv", frames=20, options={"preset": "ultrafast", "bf": "2"}
    )
    still = make_still(tmp_path / "photo.jpg", width=320, height=240)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 40)
    item = {
        "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.8.498.77"]},
        "00080050": {"vr": "SH", "Value": ["ACC-77"]},
        "00401001": {"vr": "SH", "Value": ["RP-1"]},
    }
    out = tmp_path / "out"
    result = subprocess.run(
        [
            *_command(),
            str(video),
            str(broken),
            str(still),
            "--patient-name",
            "Doe^Jane",
            "--patient-id",
            "P-77",
            "--worklist-item",
            json.dumps(item),
            "--modality",
            "ES",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 1, result.stderr  # one file failed
    lines = result.stdout.splitlines()
    assert lines[-1] == f"2 converted, 1 failed -> {out}"
    [failure] = [line for line in lines if line.startswith("FAILED")]
    assert str(broken) in failure and ".tmp" not in failure
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["photo.dcm", "scope.dcm"]  # nothing half-written
    datasets = [dcmread(f, stop_before_pixels=True) for f in files]
    assert {ds.StudyInstanceUID for ds in datasets} == {"1.2.826.0.1.3680043.8.498.77"}
    assert {ds.AccessionNumber for ds in datasets} == {"ACC-77"}
    assert {ds.PatientID for ds in datasets} == {"P-77"}
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert sorted(int(ds.InstanceNumber) for ds in datasets) == [1, 2]
    video_ds = next(ds for ds in datasets if "NumberOfFrames" in ds)
    assert video_ds.NumberOfFrames == 20 and video_ds.Modality == "ES"
    for path in files:
        checked = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        errors = [
            x for x in (checked.stdout + checked.stderr).splitlines() if x.startswith("Error")
        ]
        assert errors == [], errors


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_command(), str(tmp_path / "x.mp4"), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--patient-name" in result.stderr


async def test_send_hands_the_files_to_the_stations_sender(
    own_nats: EmbeddedNats, database_url: str, tmp_path: Path
) -> None:
    """--send: the files reach DCMTK storescp through the running sender, byte for byte; a
    destination that does not answer is reported as still retrying, with exit status 1."""
    harness = SenderHarness(own_nats, database_url, MediaStore(tmp_path / "media"), tmp_path)
    storescp = DcmtkStorescp(tool("storescp"), tmp_path / "storescp" / "out", free_port())
    storescp.start()
    video = make_video(tmp_path / "scope.mp4", frames=15, options={"preset": "ultrafast"})
    still = make_still(tmp_path / "photo.jpg", width=320, height=240)
    env = {
        **os.environ,
        "CB_NATS_URL": own_nats.url,
        "CB_DATABASE_URL": database_url,
        "CB_MEDIA_ROOT": str(harness.store.root),
    }
    base = [*_command(), "--patient-name", "Doe^Jane", "--patient-id", "P-9", "-q"]
    try:
        harness.start(
            destinations=[
                {
                    "name": "pacs",
                    "ae_title": "STORESCP",
                    "host": "127.0.0.1",
                    "port": storescp.port,
                },
                {"name": "down", "ae_title": "NOBODY", "host": "127.0.0.1", "port": free_port()},
            ]
        )
        await harness.answering()
        sent = await _run(
            [*base, str(video), str(still), "--send", "pacs", "-o", str(tmp_path / "a")], env
        )
        down = await _run(
            [*base, str(still), "--send", "down", "--send-timeout", "8", "-o", str(tmp_path / "b")],
            env,
        )
        unknown = await _run(
            [*base, str(still), "--send", "nowhere", "-o", str(tmp_path / "c")], env
        )
        received = storescp.received()
    finally:
        storescp.stop()
        harness.stop()
    assert sent.returncode == 0, sent.stdout + sent.stderr + harness.log_text()[-4000:]
    assert sent.stdout.splitlines()[-1] == "2 sent, 0 not sent -> pacs"
    outputs = sorted((tmp_path / "a").glob("*.dcm"))
    assert len(outputs) == 2
    for path in outputs:
        ds = dcmread(path, stop_before_pixels=True)
        assert dataset_bytes(received[str(ds.SOPInstanceUID)]) == dataset_bytes(path)

    assert down.returncode == 1, down.stdout + down.stderr
    assert down.stdout.splitlines()[-1] == "0 sent, 1 not sent -> down"
    assert "WAITING photo.dcm -> down: still " in down.stdout

    assert unknown.returncode == 2
    assert "no enabled destination named 'nowhere' (configured: down, pacs)" in unknown.stderr
    assert not (tmp_path / "c").exists()  # nothing converted for a destination that is not there


async def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, timeout=240, env=env
    )
