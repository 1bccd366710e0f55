"""The sequence parameters a passed-through stream carries in-band, to see a change mid-recording.

A network source may change its picture size or coding without the connection dropping (an
encoder reconfigured, a camera switched from 1080p to 720p): new parameter sets arrive with the
next key frame on the same stream. A recording copies packets as they come, and one MP4 track
or MPEG-TS program of such a file has two pictures sizes under one header — the converter then
states a size some of its frames do not have. The key frames' H.264 sequence parameter set
(ITU-T H.264 7.3.2.1) or MPEG-2 sequence header (ISO/IEC 13818-2 6.2.2.1: size, aspect and
rate) are compared with the recording's first ones.
"""

from __future__ import annotations

from typing import Any

#: Parameter sets come first in a key frame's access unit: no need to look further.
HEAD_BYTES = 4096
START = b"\x00\x00\x01"
H264_SPS = 7
MPEG2_SEQUENCE = b"\x00\x00\x01\xb3"
CHANGED = "the source changed its picture size or coding during the recording"


def sequence_header(codec: str, head: bytes) -> bytes | None:
    """The sequence parameters at the start of a key frame's data, or None if none is there."""
    if codec == "h264":
        for unit in head.split(START)[1:]:
            if unit and unit[0] & 0x1F == H264_SPS:
                return unit.rstrip(b"\x00")  # the next 4-byte start code's leading zero
        return None
    if codec == "mpeg2video":
        at = head.find(MPEG2_SEQUENCE)
        # 12 bits width, 12 bits height, aspect ratio and frame rate code.
        return head[at + 4 : at + 8] if at >= 0 and len(head) >= at + 8 else None
    return None


class SequenceWatch:
    """The first sequence parameters of a recording, and whether a later key frame differs."""

    def __init__(self) -> None:
        self.first: bytes | None = None

    def changed(self, packet: Any) -> str | None:
        """The reason to end the recording before this packet, or None to write it."""
        if not packet.is_keyframe:
            return None
        ctx = packet.stream.codec_context
        extradata = ctx.extradata or b""
        if extradata[:1] == b"\x01":
            return None  # avcC (MP4 sources): length-prefixed units, parameter sets out of band
        header = sequence_header(ctx.name, memoryview(packet)[:HEAD_BYTES].tobytes())
        if header is None:
            return None
        if self.first is None:
            self.first = header
            return None
        return CHANGED if header != self.first else None
