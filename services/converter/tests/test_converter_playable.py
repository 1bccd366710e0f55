"""Nothing unplayable becomes an instance; errors say whether a retry can ever help."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import av
import pytest
from cinebridge_converter import convert
from cinebridge_converter.errors import BadMedia, TransientFailure
from cinebridge_converter.testmedia import make_video
from cinebridge_converter.verify import Unplayable, check_playable
from pydicom import dcmread


def _without_first_key_frame(src: Path, dest: Path) -> int:
    """An MP4 whose first packets (the key frame among them) are gone: it cannot play whole."""
    written = 0
    with av.open(str(src)) as inp, av.open(str(dest), "w", format="mp4") as out:
        video = inp.streams.video[0]
        stream = out.add_stream_from_template(video)
        for index, packet in enumerate(inp.demux(video)):
            if packet.size == 0 or index < 2:
                continue
            packet.stream = stream
            out.mux(packet)
            written += 1
    return written


def test_a_stream_that_does_not_play_whole_is_re_encoded(
    tmp_path: Path, run_convert: Any, tools: Any
) -> None:
    source = make_video(
        tmp_path / "whole.mp4", frames=30, options={"preset": "ultrafast", "g": "10"}
    )
    broken = tmp_path / "broken.mp4"
    kept = _without_first_key_frame(source, broken)
    with pytest.raises(Unplayable, match="key frame"):
        check_playable(broken, kept)
    [built] = run_convert(broken)
    ds = dcmread(built.temp, stop_before_pixels=True)
    assert "not playable as coded" in ds.DerivationDescription
    stream = tools.extract_stream(built.temp, tmp_path / "s.mp4")
    assert tools.decoded(stream)[0] == ds.NumberOfFrames > 0


def test_a_frame_count_that_differs_from_the_stream_is_refused(tmp_path: Path) -> None:
    source = make_video(tmp_path / "ten.mp4", frames=10, options={"preset": "ultrafast"})
    assert check_playable(source, 10).frames == 10
    with pytest.raises(Unplayable, match="holds 10 frames where 11"):
        check_playable(source, 11)


def test_only_resource_errors_are_transient(tmp_path: Path) -> None:
    full = convert.classify(OSError(errno.ENOSPC, "No space left on device", "/x/.tmp/a.mp4"))
    assert isinstance(full, TransientFailure)
    gone = convert.classify(FileNotFoundError(errno.ENOENT, "No such file", "/x/.tmp/a.mp4"))
    assert isinstance(gone, BadMedia)
    assert ".tmp" not in gone.reason and "No such file" in gone.reason
    bad = convert.classify(av.error.InvalidDataError(errno.EINVAL, "Invalid data", "/x/a.h264"))
    assert isinstance(bad, BadMedia) and "/x" not in bad.reason
