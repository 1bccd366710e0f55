"""Presentation and decoding times of a video stream, repaired so that no packet is dropped.

Demuxers do not always give both times: Matroska carries no DTS (FFmpeg guesses them and leaves
the first packets of a stream with B-frames without one), raw H.264/HEVC elementary streams carry
neither. A muxer needs both, strictly increasing DTS and DTS <= PTS on every packet, or it refuses
the packet — and dropping packets that lack a time drops the stream's first key frame.

`VideoClock` keeps every PTS the source has and derives the DTS from the sorted PTS, delayed by
the stream's reordering depth (the way FFmpeg's own `compute_pkt_fields` does for streams
without DTS): DTS(i) = PTS-sorted(i - depth). Missing PTS are filled from the display order:
frame after frame for a stream without reordering, from one decode pass for one with B-frames
(`display_order`). A stream whose times cannot be made consistent raises `TimestampError`; the
caller then re-encodes instead of writing a stream that would not play.
"""

from __future__ import annotations

import heapq
import threading
from array import array
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import BadMedia, Cancelled
from .probe import open_input

#: Packets looked at before the first one is released (reordering depth of H.264 is at most 16).
WINDOW = 48


class TimestampError(Exception):
    """The stream's times cannot be repaired into a valid decoding order."""


def frame_ticks(stream: Any) -> int:
    """One frame's duration in the stream's time base (at least one tick)."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate or 25
    tb = stream.time_base
    return max(1, round(1 / (rate * tb))) if tb else 1


def display_order(src: Path, cancel: threading.Event) -> array[int]:
    """Rank in display order of each video packet (in decode order), by decoding once.

    Each packet is stamped with its decode index; the decoder hands the pictures back in display
    order, each with the stamp of the packet it came from.
    """
    ranks: array[int] = array("q")
    seen = 0
    with open_input(src) as inp:
        stream = inp.streams.video[0]
        stream.thread_type = "AUTO"
        order: list[int] = []
        for packet in inp.demux(stream):
            if packet.size == 0:
                continue
            if cancel.is_set():
                raise Cancelled()
            packet.pts = packet.dts = seen
            seen += 1
            order.extend(int(f.pts) for f in packet.decode() if f.pts is not None)
        order.extend(int(f.pts) for f in stream.codec_context.decode(None) if f.pts is not None)
    if sorted(order) != list(range(seen)):
        raise BadMedia(
            f"the video stream has no timestamps and only {len(order)} of its {seen} pictures "
            "decode, so their display order is unknown"
        )
    ranks.extend([0] * seen)
    for rank, index in enumerate(order):
        ranks[index] = rank
    return ranks


class VideoClock:
    """Feed video packets in decode order; get them back with a valid PTS and DTS."""

    def __init__(self, ticks: int, *, reordered: bool, ranks: Sequence[int] | None) -> None:
        self.ticks = ticks
        self.reordered = reordered
        self.ranks = ranks
        self.pending: deque[Any] = deque()
        self.heap: list[int] = []
        self.recent: deque[int] = deque()
        self.fed = 0
        self.emitted = 0
        self.depth: int | None = None
        self.first_sorted = 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None

    def feed(self, packet: Any) -> list[Any]:
        packet.pts = self._pts(packet)
        self.pending.append(packet)
        heapq.heappush(self.heap, packet.pts)
        return [self._emit()] if len(self.pending) > WINDOW else []

    def flush(self) -> list[Any]:
        return [self._emit() for _ in range(len(self.pending))]

    def _pts(self, packet: Any) -> int:
        index = self.fed
        self.fed += 1
        if self.ranks is not None:
            if index >= len(self.ranks):
                raise TimestampError("more packets than the display-order pass found")
            pts = int(self.ranks[index]) * self.ticks
        elif packet.pts is not None:
            pts = int(packet.pts)
        elif packet.dts is not None and not self.reordered:
            pts = int(packet.dts)
        elif not self.reordered:
            pts = 0 if self.last_pts is None else self.last_pts + self.ticks
        else:
            raise TimestampError("a picture of a stream with B-frames has no presentation time")
        self.last_pts = pts
        return pts

    def _emit(self) -> Any:
        if self.depth is None:
            self.depth = _reorder_depth([p.pts for p in self.pending])
            self.first_sorted = self.heap[0]
        packet = self.pending.popleft()
        self.recent.append(heapq.heappop(self.heap))
        if len(self.recent) > self.depth + 1:
            self.recent.popleft()
        if self.emitted >= self.depth:
            dts = self.recent[0]
        else:
            dts = self.first_sorted - (self.depth - self.emitted) * self.ticks
        self.emitted += 1
        if dts > packet.pts or (self.last_dts is not None and dts <= self.last_dts):
            raise TimestampError(
                f"picture {self.emitted} cannot be given a decoding time before its "
                "presentation time (duplicate or out-of-range timestamps)"
            )
        packet.dts = self.last_dts = dts
        if not packet.duration:
            packet.duration = self.ticks
        return packet


def _reorder_depth(pts: list[int]) -> int:
    """How many pictures the stream decodes ahead of their display: max(i - rank(i))."""
    ranks = {value: rank for rank, value in enumerate(sorted(pts))}
    return max(0, *(index - ranks[value] for index, value in enumerate(pts)))
