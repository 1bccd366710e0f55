"""Timestamp repair: every packet of a stream kept, DTS increasing and never after PTS."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import pytest
from cinebridge_converter.timestamps import TimestampError, VideoClock
from cinebridge_testkit.media import make_video
from pydicom import dcmread


def _packets(pts: list[int | None], dts: list[int | None]) -> list[Any]:
    return [SimpleNamespace(pts=p, dts=d, duration=40) for p, d in zip(pts, dts, strict=True)]


def _run(clock: VideoClock, packets: list[Any]) -> list[Any]:
    out = [ready for p in packets for ready in clock.feed(p)]
    return out + clock.flush()


def test_matroska_head_without_dts_gets_dts_before_the_first_known_one() -> None:
    # What FFmpeg's Matroska demuxer gives for x264 with B-frames: the first two without DTS.
    pts = [0, 160, 80, 40, 120, 320, 240, 200, 280]
    dts = [None, None, 0, 40, 80, 120, 160, 200, 240]
    out = _run(VideoClock(40, reordered=True, ranks=None), _packets(pts, dts))
    assert [p.pts for p in out] == pts
    assert [p.dts for p in out] == [-80, -40, 0, 40, 80, 120, 160, 200, 240]


def test_stream_without_any_time_follows_the_display_order() -> None:
    ranks = [0, 3, 1, 2, 6, 4, 5]
    out = _run(VideoClock(10, reordered=True, ranks=ranks), _packets([None] * 7, [None] * 7))
    assert [p.pts for p in out] == [r * 10 for r in ranks]
    dts = [p.dts for p in out]
    assert dts == sorted(dts) and len(set(dts)) == len(dts)
    assert all(p.dts <= p.pts for p in out)


def test_progressive_stream_without_times_is_numbered_frame_by_frame() -> None:
    out = _run(VideoClock(3, reordered=False, ranks=None), _packets([None] * 4, [None] * 4))
    assert [(p.pts, p.dts) for p in out] == [(0, 0), (3, 3), (6, 6), (9, 9)]


def test_duplicate_times_are_refused_not_written() -> None:
    with pytest.raises(TimestampError):
        _run(VideoClock(1, reordered=False, ranks=None), _packets([0, 1, 1, 2], [0, 1, 1, 2]))


@pytest.mark.parametrize(("name", "container"), [("bframes.mkv", "matroska"), ("raw.h264", "h264")])
def test_remux_keeps_every_frame_and_the_first_key_frame(
    tmp_path: Path, run_convert: Any, tools: Any, name: str, container: str
) -> None:
    source = make_video(
        tmp_path / name,
        frames=30,
        container=container,
        options={"preset": "ultrafast", "bf": "3", "g": "12"},
    )
    with av.open(str(source)) as check:
        assert check.streams.video[0].codec_context.has_b_frames
        assert any(p.dts is None for p in check.demux(video=0) if p.size)
    [built] = run_convert(source)
    ds = dcmread(built.temp, stop_before_pixels=True)
    assert "DerivationDescription" not in ds  # remuxed, not re-encoded
    assert ds.NumberOfFrames == 30
    stream = tools.extract_stream(built.temp, tmp_path / "s.mp4")
    assert tools.decoded(stream)[0] == 30
    with av.open(str(stream)) as out:
        first = next(p for p in out.demux(video=0) if p.size)
        assert first.is_keyframe
