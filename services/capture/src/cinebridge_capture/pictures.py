"""What one source looks like now, for snapshots, the live preview and thumbnails.

The reader thread keeps the latest decoded frame while it decodes every picture; a source
recorded by pass-through is not decoded continuously, so its current picture is decoded on
demand from the packets since the last keyframe (keyframe → latest packet: still the current
picture), and a thumbnail decodes only the keyframe (once per GOP).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import av

from .pipeline_types import NoSignal
from .ring import GopBuffer
from .sources import Decode, StreamInfo, decode_latest


class Pictures:
    """The reader thread writes `latest`, `decoding` and the GOP; callers read pictures."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.latest: av.VideoFrame | None = None
        self.gop = GopBuffer()
        self.decoding: Decode = "all"  # what the reader decodes right now
        self._thumb: tuple[int, av.VideoFrame | None] = (-1, None)  # (GOP serial, keyframe)

    def clear(self) -> None:
        """The source was (re)opened: nothing from before is current."""
        self.gop.clear()
        self.latest = None
        self._thumb = (-1, None)

    def add_packet(self, packet: Any) -> None:
        self.gop.add(packet)

    def now(self, info: StreamInfo | None) -> Callable[[], av.VideoFrame]:
        """Fixes the current picture now (cheap) and returns how to get it (maybe expensive:
        run it in a worker thread)."""
        latest = self.latest
        if self.decoding == "all" and latest is not None:
            return lambda: latest
        # Pass-through: decode the GOP so far (also while continuous decoding resumes).
        packets = self.gop.packets()
        if info is None or info.template is None or not packets:
            raise NoSignal(f"source {self.source} has no keyframe yet")
        template = info.template

        def decode() -> av.VideoFrame:
            frame = decode_latest(template, packets)
            if frame is None:
                raise NoSignal(f"source {self.source}: no picture could be decoded")
            return frame

        return decode

    def preview(self, info: StreamInfo | None) -> av.VideoFrame:
        """A recent picture as cheaply as it comes: the reader's latest while it decodes, else
        the current GOP's keyframe (decoded once)."""
        latest = self.latest
        if self.decoding != "none" and latest is not None:
            return latest
        serial, keyframe = self.gop.keyframe()
        if info is None or info.template is None or keyframe is None:
            raise NoSignal(f"source {self.source} has no picture yet")
        cached_serial, cached = self._thumb
        if cached_serial == serial and cached is not None:
            return cached
        frame = decode_latest(info.template, [keyframe])
        if frame is None:
            raise NoSignal(f"source {self.source}: keyframe could not be decoded")
        self._thumb = (serial, frame)
        return frame
