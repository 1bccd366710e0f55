"""Sources the capture does not make, made here with FFmpeg, through the converter service.

Each becomes an instance with the default IOD profile that dciodvfy finds no error in, whose
stream decodes (PyAV and FFmpeg) to exactly Number of Frames, and that Orthanc stores and serves
back unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest
from cinebridge_converter import app
from cinebridge_testkit import require_tool, wait_for
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import generate_fragments

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SC, MF_SC = "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.4"
VL_ES, VIDEO_ES = "1.2.840.10008.5.1.4.1.1.77.1.1", "1.2.840.10008.5.1.4.1.1.77.1.1.1"
VIDEO_XC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
PATTERN = "testsrc2=size={size}:rate={rate}"


@dataclass(frozen=True)
class Source:
    name: str
    make: Callable[[Path], None]
    modality: str  # the station's default Modality (no worklist item): picks the IOD
    sop_class: str
    frames: int | None  # None: a still
    derived: bool  # re-encoded (Derivation Description, DERIVED)
    frame_time: float | None = None
    field_order: str | None = None  # FFmpeg's name for the output's field order


def ffmpeg(*args: str, size: str = "320x240", rate: str = "25") -> Callable[[Path], None]:
    """A source encoded by the FFmpeg command line from its lavfi test pattern."""

    def make(path: Path) -> None:
        tool = require_tool("ffmpeg")
        pattern = PATTERN.format(size=size, rate=rate)
        command = [tool, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
        subprocess.run(
            [*command, "-i", pattern, *args, str(path)],
            check=True,
            timeout=120,
            capture_output=True,
        )

    return make


def progressive_jpeg(path: Path) -> None:
    png = path.with_suffix(".png")
    ffmpeg("-frames:v", "1", size="640x480")(png)
    with Image.open(png) as img:
        img.convert("RGB").save(path, "JPEG", progressive=True, quality=90)


X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


TURN = ("-metadata:s:v:0", "rotate=90")


def rotated(path: Path) -> None:
    """H.264 whose MP4 display matrix turns it 90 degrees (set on a copy: FFmpeg's muxer writes
    the `rotate` tag into `tkhd` when the stream is copied)."""
    coded = path.with_name(f"coded-{path.name}")
    ffmpeg("-t", "1", *X264)(coded)
    subprocess.run(
        [
            require_tool("ffmpeg"),
            "-v",
            "error",
            "-y",
            "-i",
            str(coded),
            "-c",
            "copy",
            *TURN,
            str(path),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )


SOURCES = [
    Source(
        "h264-bframes.mkv",
        ffmpeg("-t", "2", "-c:v", "libx264", "-bf", "3", "-g", "25", "-pix_fmt", "yuv420p"),
        "ES",
        VIDEO_ES,
        50,
        False,
        40.0,
    ),
    Source(
        "raw.h264",
        ffmpeg("-t", "2", "-c:v", "libx264", "-bf", "2", "-pix_fmt", "yuv420p", "-f", "h264"),
        "OT",
        MF_SC,
        50,
        False,
        40.0,
    ),
    Source(
        "raw.m2v",
        ffmpeg("-t", "2", "-c:v", "mpeg2video", "-f", "mpeg2video", size="720x576"),
        "OT",
        MF_SC,
        50,
        True,
        40.0,
    ),
    Source(
        "hevc-main10.mp4",
        ffmpeg(
            "-t",
            "1",
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p10le",
            "-x265-params",
            "log-level=error",
        ),
        "OT",
        MF_SC,
        25,
        True,
    ),
    Source(
        "mjpeg-422.avi",
        ffmpeg("-t", "1", "-c:v", "mjpeg", "-pix_fmt", "yuvj422p"),
        "ES",
        VIDEO_ES,
        25,
        True,
    ),
    Source(
        # True variable rate: runs of 3 of every 10 frames, timestamps on the 30 fps grid.
        "vfr.mp4",
        ffmpeg(
            "-t",
            "2",
            "-vf",
            "select='lt(mod(n\\,10)\\,3)'",
            "-fps_mode",
            "vfr",
            *X264,
            rate="30",
        ),
        "OT",
        MF_SC,
        None,  # resampled: 30 fps over the source's duration (checked against the stream)
        True,
        33.3333,
    ),
    Source(
        # True 1080i50: 50 fields/s, top field first, MBAFF-coded in MPEG-TS.
        "1080i50.ts",
        ffmpeg(
            "-t",
            "1",
            "-vf",
            "tinterlace=interleave_top,fieldorder=tff",
            "-r",
            "25",
            *X264,
            "-flags",
            "+ildct+ilme",
            "-x264-params",
            "tff=1",
            "-f",
            "mpegts",
            size="1920x1080",
            rate="50",
        ),
        "OT",
        MF_SC,
        25,
        False,
        40.0,
        "tt",
    ),
    Source(
        "720p5994.mp4",
        ffmpeg("-t", "1", *X264, size="1280x720", rate="60000/1001"),
        "ES",
        VIDEO_ES,
        60,
        False,
        16.6833,
    ),
    Source(
        "4k-level51.mp4",
        ffmpeg("-t", "1", *X264, "-level", "5.1", size="3840x2160", rate="30"),
        "OT",
        MF_SC,
        30,
        True,
    ),
    Source("portrait.mp4", ffmpeg("-t", "1", *X264, size="480x854"), "XC", VIDEO_XC, 25, False),
    Source("1366x768.mp4", ffmpeg("-t", "1", *X264, size="1366x768"), "OT", MF_SC, 25, False),
    Source(
        "audio.mp4",
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "2",
            *X264,
            "-c:a",
            "aac",
            "-shortest",
        ),
        "OT",
        MF_SC,
        50,
        False,
    ),
    Source("three-frames.mp4", ffmpeg("-frames:v", "3", *X264), "ES", VIDEO_ES, 3, False),
    # One frame: no Frame Increment Pointer in Multi-frame SC (PS3.3 C.8.6.3).
    Source("one-frame.mp4", ffmpeg("-frames:v", "1", *X264), "OT", MF_SC, 1, False),
    # A phone held upright (display matrix 90 degrees): turned upright, Rows 320 x Columns 240.
    Source(
        "rotated-90.mp4",
        rotated,
        "ES",
        VIDEO_ES,
        25,
        True,
        40.0,
    ),
    Source(
        "dnxhd.mxf",
        ffmpeg(
            "-t", "0.4", "-c:v", "dnxhd", "-b:v", "36M", "-pix_fmt", "yuv422p", size="1920x1080"
        ),
        "OT",
        MF_SC,
        10,
        True,
    ),
    Source(
        "vp9.webm",
        ffmpeg("-t", "1", "-c:v", "libvpx-vp9", "-deadline", "realtime"),
        "XC",
        VIDEO_XC,
        25,
        True,
    ),
    Source("animated.gif", ffmpeg("-t", "1"), "OT", MF_SC, 25, True),
    Source("progressive.jpg", progressive_jpeg, "OT", SC, None, True),
    Source(
        "444.jpg",
        ffmpeg("-frames:v", "1", "-pix_fmt", "yuvj444p", size="640x480"),
        "ES",
        VL_ES,
        None,
        True,
    ),
]


@pytest.fixture
async def service(client: Any, make_settings: Any) -> AsyncIterator[Callable[[str], Any]]:
    """Starts the converter service with a given default Modality (no worklist item)."""
    tasks: list[asyncio.Task[None]] = []

    def start(modality: str) -> Any:
        settings = make_settings(converter_default_modality=modality)
        tasks.append(asyncio.create_task(app.run(settings)))
        return client

    try:
        yield start
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 15)


@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
async def test_source_becomes_valid_playable_dicom_that_orthanc_keeps(
    service: Any, orthanc: Any, tmp_path: Path, source: Source
) -> None:
    dciodvfy = require_tool("dciodvfy")
    media_path = tmp_path / source.name
    source.make(media_path)
    converter = service(source.modality)
    study = await converter.add_study()
    kind = "snapshot" if source.name.endswith(".jpg") else "recording"
    media = await converter.add_media(study, media_path, kind)
    await converter.submit(media, study)  # no options: the station's default profile

    async def done() -> list[Any] | None:
        state = await converter.outcome(media)
        assert state["state"] != "failed", state["error"]
        rows = await converter.instances(media)
        return rows if rows and state["state"] == "converted" else None

    [row] = await wait_for(done, 240, 0.2, what=f"{source.name} converted")
    path = converter.store.resolve(row["rel_path"])
    ds = dcmread(path, stop_before_pixels=True)
    assert ds.SOPClassUID == source.sop_class
    assert ("DerivationDescription" in ds) is source.derived
    checked = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    lines = (checked.stdout + checked.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    assert errors == [], errors

    stream = _extract(path, tmp_path / "stream.bin")
    if kind == "snapshot":
        with Image.open(stream) as img:
            assert img.size == (ds.Columns, ds.Rows)
            assert img.info.get("progressive", 0) == 0
        assert "NumberOfFrames" not in ds
    else:
        frames = int(ds.NumberOfFrames)
        if source.frames is not None:
            assert frames == source.frames
        assert _pyav_frames(stream) == frames
        assert _ffmpeg_frames(stream) == frames
        if source.frame_time is not None:
            assert float(ds.FrameTime) == pytest.approx(source.frame_time, abs=0.001)
        if source.field_order is not None:
            assert _field_order(stream) == source.field_order
    assert len(ds.ImageType) == 4 and list(ds.ImageType)[2:] == ["", ""]  # statement Table 35
    assert orthanc.store_and_fetch(path) == orthanc.data_set(path.read_bytes())


def _extract(path: Path, dest: Path) -> Path:
    """The fragments of Pixel Data concatenated: what a recipient plays."""
    ds = dcmread(path)
    with open(dest, "wb") as fh:
        for fragment in generate_fragments(ds.PixelData):
            fh.write(fragment)
    return dest


def _pyav_frames(stream: Path) -> int:
    with av.open(str(stream)) as container:
        return sum(1 for _ in container.decode(video=0))


def _ffmpeg_frames(stream: Path) -> int:
    out = subprocess.run(
        [
            require_tool("ffprobe"),
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(stream),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(out.stdout.split()[0].strip(","))  # MPEG-TS adds its program's copy


def _field_order(stream: Path) -> str:
    out = subprocess.run(
        [
            require_tool("ffprobe"),
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=field_order",
            "-of",
            "csv=p=0",
            str(stream),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.split()[0].strip(",")
