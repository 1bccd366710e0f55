"""The in-band sequence parameters a pass-through recording compares (sequence.py)."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest
from cinebridge_capture.sequence import sequence_header


def _first_packet(codec: str, width: int, height: int) -> bytes:
    """The first (key frame) packet of an encoder in Annex B / elementary stream form."""
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, 25), Fraction(25)
    if codec == "libx264":
        ctx.options = {"preset": "ultrafast"}
    frame = av.VideoFrame(width, height, "yuv420p")
    frame.pts = 0
    packets = [*ctx.encode(frame), *ctx.encode(None)]
    return bytes(packets[0])


@pytest.mark.parametrize(("codec", "name"), [("libx264", "h264"), ("mpeg2video", "mpeg2video")])
def test_a_new_picture_size_changes_the_sequence_header(codec: str, name: str) -> None:
    hd = sequence_header(name, _first_packet(codec, 1280, 720))
    again = sequence_header(name, _first_packet(codec, 1280, 720))
    small = sequence_header(name, _first_packet(codec, 640, 360))
    assert hd is not None and small is not None
    assert hd == again  # the same encoder settings: no change seen
    assert hd != small


def test_a_packet_without_parameters_says_nothing() -> None:
    assert sequence_header("h264", b"\x00\x00\x00\x01\x41\x9a\x00\x10") is None  # a P slice
    assert sequence_header("mpeg2video", b"\x00\x00\x01\x00\x00\x0f") is None  # a picture
    assert sequence_header("hevc", b"\x00\x00\x01\x40\x01") is None  # not compared
