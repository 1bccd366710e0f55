"""Export files: recordings to MP4 (moov first) as capture writes them (fragmented MP4) or in
another codec, snapshots to JPEG, captions burned in, the ZIP and the purge of old downloads."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cinebridge_converter.deidentify import DeidOptions
from cinebridge_converter.errors import Cancelled
from cinebridge_converter.export import (
    ExportPlan,
    _pixels_last,
    caption_text,
    purge_old_exports,
    write_export,
    zip_folder,
)
from cinebridge_converter.export_media import export_recording, export_still
from cinebridge_testkit import require_tool
from cinebridge_testkit.media import make_still, make_video
from PIL import Image, ImageChops, ImageStat
from pydicom import dcmread

from .conftest import STUDY

SHOW = ("-show_format", "-show_streams", "-count_packets")


def _probe(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [require_tool("ffprobe"), "-v", "error", "-of", "json", *SHOW, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(done.stdout))


def _top_boxes(path: Path) -> list[bytes]:
    data, offset, boxes = path.read_bytes(), 0, []
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8])
        if size < 8:
            break
        offset += size
    return boxes


@pytest.mark.parametrize(
    ("codec", "container_options"),
    [
        ("libx264", {"movflags": "frag_keyframe+empty_moov+default_base_moof"}),
        ("mpeg2video", None),
    ],
    ids=["fragmented-h264", "mpeg2"],
)
def test_recording_becomes_faststart_h264(
    tmp_path: Path, codec: str, container_options: dict[str, str] | None
) -> None:
    src = make_video(
        tmp_path / "in.mp4", codec=codec, frames=50, rate=25, container_options=container_options
    )
    dest = tmp_path / "out.mp4"
    export_recording(src, dest, caption=None, preset="ultrafast", cancel=threading.Event())
    probe = _probe(dest)
    [video] = probe["streams"]
    assert video["codec_name"] == "h264"
    assert int(video["nb_read_packets"]) == 50
    assert abs(float(probe["format"]["duration"]) - 2.0) < 0.1
    boxes = _top_boxes(dest)
    assert boxes.index(b"moov") < boxes.index(b"mdat"), boxes
    assert b"moof" not in boxes, "one plain MP4, not fragments"


FIRST = ("-frames:v", "1")


def test_burned_caption_changes_the_picture_not_the_length(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=25, rate=25)
    plain, burned = tmp_path / "plain.mp4", tmp_path / "burned.mp4"
    cancel = threading.Event()
    export_recording(src, plain, caption=None, preset="ultrafast", cancel=cancel)
    export_recording(src, burned, caption="Doe, Jane  P-1", preset="ultrafast", cancel=cancel)
    assert int(_probe(burned)["streams"][0]["nb_read_packets"]) == 25
    frames = []
    for path in (plain, burned):
        out = tmp_path / f"{path.stem}.png"
        subprocess.run(
            [require_tool("ffmpeg"), "-v", "error", "-y", "-i", str(path), *FIRST, str(out)],
            check=True,
            timeout=60,
        )
        frames.append(Image.open(out).convert("L"))
    # The caption's band (bottom left) differs from the source; the rest of the picture only
    # by the re-encoding.
    diff = ImageChops.difference(*frames)
    w, h = diff.size
    band = ImageStat.Stat(diff.crop((0, h - 12, w // 4, h))).mean[0]
    rest = ImageStat.Stat(diff.crop((0, 0, w, h // 2))).mean[0]
    assert band > 20 > rest + 10, (band, rest)


def test_cancel_stops_and_leaves_nothing(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=25)
    cancel = threading.Event()
    cancel.set()
    dest = tmp_path / "out.mp4"
    with pytest.raises(Cancelled):
        export_recording(src, dest, caption="x", preset="ultrafast", cancel=cancel)
    assert not dest.exists()


def test_still_copied_or_captioned(tmp_path: Path) -> None:
    src = make_still(tmp_path / "s.jpg")
    export_still(src, tmp_path / "copy.jpg", caption=None)
    assert (tmp_path / "copy.jpg").read_bytes() == src.read_bytes()
    export_still(src, tmp_path / "cap.jpg", caption="Doe, Jane")
    with Image.open(tmp_path / "cap.jpg") as image:
        assert image.format == "JPEG" and image.size == (640, 480)
        assert image.convert("L").getpixel((1, 478)) < 40
    png = make_still(tmp_path / "s.png", fmt="PNG")
    export_still(png, tmp_path / "png.jpg", caption=None)
    assert (tmp_path / "png.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_caption_text_names_patient_and_date() -> None:
    assert caption_text(STUDY) == "Doe, Jane  P-001  2026-11-29"


def test_zip_and_purge(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    (folder / "PT000000").mkdir(parents=True)
    (folder / "DICOMDIR").write_bytes(b"a")
    (folder / "PT000000" / "IM000000").write_bytes(b"b")
    (tmp_path / "area").mkdir()
    zip_folder(folder, tmp_path / "area" / "one.zip")
    with zipfile.ZipFile(tmp_path / "area" / "one.zip") as zf:
        assert sorted(zf.namelist()) == ["DICOMDIR", "PT000000/IM000000"]
    fresh = tmp_path / "area" / "fresh.zip"
    fresh.write_bytes(b"")
    old = time.time() - 7200
    os.utime(tmp_path / "area" / "one.zip", (old, old))
    assert purge_old_exports(tmp_path / "area", keep_s=3600) == 1
    assert [p.name for p in (tmp_path / "area").iterdir()] == ["fresh.zip"]


def test_deid_media_copy_pixel_data_as_bytes(
    run_convert: Callable[..., Any], tmp_path: Path
) -> None:
    """The de-identified header is written, the video's Pixel Data copied after it unchanged:
    the copy is a valid file with the same pictures and none of the header's identity."""
    video = make_video(tmp_path / "v.mp4", frames=250, width=640, height=480)
    [built] = run_convert(video, "recording", iod="vl")
    still = make_still(tmp_path / "s.jpg")
    [snap] = run_convert(still, "snapshot", iod="vl", media_id=str(uuid.uuid4()))
    sources = [built.temp, snap.temp]
    original = dcmread(built.temp, defer_size=1 << 16)
    assert _pixels_last(original, built.temp) is not None, "the station's video qualifies"
    plan = ExportPlan("deid", "none", DeidOptions(), seed="k")
    out = tmp_path / "out"
    out.mkdir()
    result = write_export(plan, STUDY, [], sources, out, threading.Event())
    assert result.files == 3
    copies = {dcmread(p).SOPClassUID: p for p in out.rglob("IM*")}
    for src in sources:
        before = dcmread(src)
        after = dcmread(copies[before.SOPClassUID])
        assert after.PixelData == before.PixelData
        assert after.PatientName != before.PatientName and after.PatientIdentityRemoved == "YES"
        assert after.SOPInstanceUID != before.SOPInstanceUID
        dump = subprocess.run(
            [require_tool("dcmdump"), "-q", str(copies[before.SOPClassUID])],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert dump.returncode == 0 and "PixelData" in dump.stdout, dump.stderr
