"""Pure pieces of capture: settings, source URLs, formats, unscheduled study identifiers."""

from __future__ import annotations

import datetime as dt
import os
import time
from fractions import Fraction
from pathlib import Path

import pytest
from cinebridge_capture.encoding import SlotClock, mode_for, passthrough_ok, target_geometry
from cinebridge_capture.keys import EV_KEY, EVENT, InputReader, key_code
from cinebridge_capture.repository import unscheduled_identifiers
from cinebridge_capture.room import redact_url
from cinebridge_capture.settings import CaptureSettings, SourceConfig
from cinebridge_capture.sources import StreamInfo, av_input
from pydantic import ValidationError


def test_sources_come_from_json_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_CAPTURE_ROOM", "or-2")
    monkeypatch.setenv(
        "CB_CAPTURE_SOURCES",
        '[{"name":"endo","url":"lavfi:testsrc2=size=1280x720:rate=30"},'
        '{"name":"us","url":"v4l2:///dev/video0","width":1920,"height":1080,"fps":30,'
        '"pixel_format":"MJPG"}]',
    )
    settings = CaptureSettings()
    assert settings.capture_room == "or-2"
    assert [s.name for s in settings.capture_sources] == ["endo", "us"]
    assert settings.source("us") is not None and settings.source("us").pixel_format == "MJPG"


@pytest.mark.parametrize(
    "name, url",
    [
        ("Endo", "lavfi:testsrc2"),  # upper case: not a subject token
        ("a.b", "lavfi:testsrc2"),  # a dot would split the NATS subject
        ("endo", "/dev/video0"),  # no scheme
        ("endo", "concat:/etc/passwd"),  # FFmpeg protocols outside the list are refused
    ],
)
def test_bad_source_names_and_urls_are_refused(name: str, url: str) -> None:
    with pytest.raises(ValidationError):
        SourceConfig(name=name, url=url)


def test_duplicate_source_names_are_refused() -> None:
    with pytest.raises(ValidationError):
        CaptureSettings(
            capture_sources=[
                SourceConfig(name="a", url="lavfi:testsrc2"),
                SourceConfig(name="a", url="lavfi:testsrc"),
            ]
        )


def test_no_room_takes_the_study_catalogs_subject_name() -> None:
    with pytest.raises(ValidationError, match="catalog"):
        CaptureSettings(capture_room="catalog")
    assert CaptureSettings(capture_room="catalog2").capture_room == "catalog2"


def test_preview_beyond_loopback_needs_a_real_secret() -> None:
    with pytest.raises(ValidationError):
        CaptureSettings(capture_preview_host="0.0.0.0")
    assert CaptureSettings(capture_preview_host="0.0.0.0", secret_key="x" * 40)


def test_source_urls_map_to_ffmpeg_inputs() -> None:
    lavfi = av_input("lavfi:testsrc2=size=640x360:rate=15")
    assert (lavfi.target, lavfi.format, lavfi.paced, lavfi.compressed) == (
        "testsrc2=size=640x360:rate=15",
        "lavfi",
        True,
        False,
    )
    demo = av_input("file:///srv/demo%20video.mp4?loop=1")
    assert (demo.target, demo.loop, demo.paced) == ("/srv/demo video.mp4", True, True)
    udp = av_input("udp://127.0.0.1:5000")
    assert udp.target.startswith("udp://127.0.0.1:5000?fifo_size=") and not udp.paced
    assert av_input("rtsp://cam/stream").options == {"rtsp_transport": "tcp"}


def test_credentials_in_source_urls_are_not_shown() -> None:
    assert redact_url("rtsp://admin:secret@10.0.0.9/stream") == "rtsp://***@10.0.0.9/stream"


def test_station_transfer_syntax_chooses_the_recording_mode() -> None:
    assert mode_for("auto", "1.2.840.10008.1.2.4.100") == "mpeg2-ml"
    assert mode_for("auto", "1.2.840.10008.1.2.4.101") == "mpeg2-hl"
    assert mode_for("auto", "1.2.840.10008.1.2.4.103") == "h264"
    assert mode_for("auto", None) == "h264"
    assert mode_for("mpeg2-ml", "1.2.840.10008.1.2.4.102") == "mpeg2-ml"


def test_geometry_stays_within_the_transfer_syntax_limits() -> None:
    assert target_geometry("h264", 1920, 1080, Fraction(30)) == (1920, 1080, Fraction(30))
    # 1080p60 breaks level 4.1 (245 760 MB/s): the rate is capped.
    w, h, fps = target_geometry("h264", 1920, 1080, Fraction(60))
    assert (w, h) == (1920, 1080) and fps * 8160 <= 245_760
    assert target_geometry("h264", 3840, 2160, Fraction(30))[:2] == (1920, 1080)
    assert target_geometry("mpeg2-ml", 1920, 1080, Fraction(25)) == (720, 576, Fraction(25))
    assert target_geometry("mpeg2-ml", 1280, 720, Fraction(30))[:2] == (720, 480)


def _info(**kw: object) -> StreamInfo:
    base: dict[str, object] = dict(
        codec="h264",
        width=1280,
        height=720,
        fps=Fraction(30),
        pix_fmt="yuv420p",
        profile="High",
        level=31,
        template=object(),
    )
    base.update(kw)
    return StreamInfo(**base)  # type: ignore[arg-type]


def test_passthrough_only_for_streams_the_syntax_accepts() -> None:
    assert passthrough_ok("h264", _info())
    assert not passthrough_ok("h264", _info(template=None))  # lavfi / V4L2: nothing to copy
    assert not passthrough_ok("h264", _info(profile="High 4:2:2", pix_fmt="yuv422p"))
    assert not passthrough_ok("h264", _info(level=51, width=3840, height=2160))
    assert not passthrough_ok("h264", _info(codec="hevc"))
    assert not passthrough_ok("mpeg2-ml", _info())
    assert passthrough_ok(
        "mpeg2-ml", _info(codec="mpeg2video", width=720, height=576, profile="Main", level=8)
    )


def test_unscheduled_identifiers_follow_the_statement() -> None:
    now = dt.datetime(2026, 11, 29, 7, 5, 9, 123456, tzinfo=dt.UTC)
    ids = unscheduled_identifiers(now)
    # Table 30: Study ID and Accession Number are "YYYYMMDDHHIISSss" (SH, 16 characters).
    assert ids["study_id"] == ids["accession_number"] == "2026112907050912"
    assert ids["study_date"] == "20261129" and ids["study_time"] == "070509.123"


def test_slot_clock_follows_source_timestamps_through_a_late_burst() -> None:
    clock = SlotClock(Fraction(30), t0=100.0)
    slots = [clock.slot(100.0 + i / 30, i / 30) for i in range(10)]
    # Frames 10-14 arrive together 0.2 s late (scheduling hiccup): spacing is kept, none lost.
    slots += [clock.slot(100.0 + 14 / 30 + 0.2, i / 30) for i in range(10, 15)]
    assert slots == list(range(15))


def test_slot_clock_reanchors_after_a_dropout_and_decimates_a_faster_source() -> None:
    clock = SlotClock(Fraction(30), t0=0.0)
    assert [clock.slot(i / 30, 5.0 + i / 30) for i in range(3)] == [0, 1, 2]
    # Reopened 2 s later with a new clock starting at 0: the gap is held, not squeezed out.
    assert clock.slot(2.1, 0.0) == 63
    fast = SlotClock(Fraction(30), t0=0.0)
    kept = [fast.slot(i / 60, i / 60) for i in range(60)]
    assert 29 <= sum(k is not None for k in kept) <= 31  # 60 fps in, 30 fps out


def test_slot_clock_without_source_timestamps_uses_arrival_time() -> None:
    clock = SlotClock(Fraction(25), t0=0.0)
    assert clock.slot(0.0, None) == 0
    assert clock.slot(0.041, None) == 1
    assert clock.slot(0.045, None) == 2  # early (burst): next slot while the clock allows it
    assert clock.slot(0.2, None) == 5


def test_input_device_presses_are_decoded(tmp_path: Path) -> None:
    fifo = tmp_path / "event0"
    os.mkfifo(fifo)
    pressed: list[int] = []
    reader = InputReader(fifo, pressed.append, retry_s=0.1)
    reader.start()
    try:
        with open(fifo, "wb") as dev:
            for code, value in ((67, 1), (67, 0), (68, 2), (272, 1)):  # press, release, repeat
                dev.write(EVENT.pack(0, 0, EV_KEY, code, value))
            dev.write(EVENT.pack(0, 0, 0, 0, 0))  # EV_SYN
        deadline = time.monotonic() + 5
        while len(pressed) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        reader.close()
    assert pressed == [67, 272]
    assert key_code("KEY_F9") == 67 and key_code("btn_left") == 272 and key_code("30") == 30
    with pytest.raises(ValueError):
        key_code("KEY_NOPE")


def test_recording_keys_are_checked_at_start() -> None:
    keys = {"KEY_F9": {"source": "endo", "action": "snapshot"}}
    settings = CaptureSettings(capture_input_keys=keys)
    assert settings.capture_input_keys["KEY_F9"].action == "snapshot"
    with pytest.raises(ValidationError):
        CaptureSettings(capture_input_keys={"KEY_NOPE": {"source": "endo", "action": "snapshot"}})
    with pytest.raises(ValidationError):
        CaptureSettings(capture_input_keys={"KEY_F9": {"source": "endo", "action": "eject"}})
