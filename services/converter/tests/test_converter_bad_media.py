"""Hostile or broken media end with a clear reason and leave nothing half-written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import pytest
from cinebridge_common.store import MediaStore
from cinebridge_converter.errors import BadMedia
from cinebridge_testkit.media import huge_jpeg_header, make_video


def _truncated_mp4(folder: Path) -> Path:
    full = make_video(folder / "full.mp4", frames=50, options={"preset": "ultrafast"})
    cut = folder / "truncated.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return cut


def _audio_only(folder: Path) -> Path:
    path = folder / "audio.mp4"
    with av.open(str(path), "w") as out:
        stream: Any = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = 48000
        for n in range(10):
            frame.pts = n * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _text(folder: Path) -> Path:
    path = folder / "notes.mp4"
    path.write_text("this is not a video\n" * 100)
    return path


def _playlist(folder: Path) -> Path:
    """An HLS playlist posing as a recording: FFmpeg must not go and fetch its segments."""
    path = folder / "playlist.m3u8"
    path.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/a.ts\n"
        "#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    )
    return path


def _empty(folder: Path) -> Path:
    path = folder / "empty.mp4"
    path.touch()
    return path


CASES = [
    ("recording", _truncated_mp4, "truncated"),
    ("recording", _text, "not a video"),
    ("recording", _empty, "empty file"),
    ("recording", _audio_only, "no video stream"),
    ("recording", _playlist, "not a video"),
    ("snapshot", lambda folder: huge_jpeg_header(folder / "bomb.jpg"), "exceeds the limit"),
    ("snapshot", _empty, "empty file"),
    ("snapshot", _text, "not an image"),
]


@pytest.mark.parametrize(
    ("kind", "make", "reason"),
    CASES,
    ids=[
        "truncated-mp4",
        "text",
        "zero",
        "audio-only",
        "hls-playlist",
        "20000x20000-jpeg",
        "zero-snapshot",
        "text-snapshot",
    ],
)
def test_bad_media_is_refused_with_a_reason(
    tmp_path: Path, store: MediaStore, run_convert: Any, kind: str, make: Any, reason: str
) -> None:
    source = make(tmp_path)
    with pytest.raises(BadMedia) as caught:
        run_convert(source, kind=kind)
    assert reason in caught.value.reason
    assert list(store.tmp.iterdir()) == []  # no partial file left behind
    assert not (store.root / "dicom").exists()
