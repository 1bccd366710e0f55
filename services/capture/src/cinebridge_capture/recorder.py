"""Crash-safe recording files: fragmented MP4 / MPEG-TS writer, probe, and salvage after a crash.

Fragmented MP4 (`empty_moov` + a fragment per keyframe, at most one second) and MPEG-TS need no
index at the end: a crash or power loss leaves every completed fragment playable. The writer
flushes each packet to the kernel and fsyncs every few seconds; `salvage` remuxes what survived
into a clean file and counts its frames and duration.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from .encoding import RecordingFormat

#: Periodic fsyncs of live recordings, off the encoder threads (one per recording at a time).
_FSYNC = ThreadPoolExecutor(max_workers=4, thread_name_prefix="recording-fsync")

MP4_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "frag_duration": "1000000",
    "flush_packets": "1",
}
TS_OPTIONS = {"flush_packets": "1"}


class RecordingUnreadable(RuntimeError):
    """A recording file holds no playable video (the reason says why)."""


@dataclass(frozen=True)
class VideoFacts:
    frames: int
    duration_s: float
    codec: str
    width: int
    height: int
    fps: float | None
    profile: str | None = None
    level: int | None = None


def container_options(container: str) -> dict[str, str]:
    return dict(MP4_OPTIONS if container == "mp4" else TS_OPTIONS)


class RecordingWriter:
    """Muxes compressed packets (encoded here or passed through) into one recording file."""

    def __init__(
        self,
        path: Path,
        fmt: RecordingFormat,
        template: Any,
        fps: Fraction,
        fsync_interval_s: float,
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.fps = fps
        # Our own descriptor for fsync (FFmpeg's is private); created now, FFmpeg opens lazily.
        self._fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        self.container = av.open(
            str(path), "w", format=fmt.container, options=container_options(fmt.container)
        )
        self.stream: Any = self.container.add_stream_from_template(template)
        extradata = template.codec_context.extradata
        if extradata:
            self.stream.codec_context.extradata = extradata
        self.frames = 0
        self._offset: int | None = None
        self._resegment = False
        self._last_dts: int | None = None
        self._start: int | None = None  # earliest presentation time written
        self.skipped = 0
        self._end: int | None = None  # end of the last packet, in packet time base
        self._time_base: Fraction | None = None
        self._fsync_interval_s = fsync_interval_s
        self._synced_at = time.monotonic()
        self._sync: Future[None] | None = None
        self.width = int(template.codec_context.width)
        self.height = int(template.codec_context.height)
        self.started = time.monotonic()

    def new_segment(self) -> None:
        """The source reconnected: continue its timestamps right after what was written."""
        self._resegment = True

    def write(self, packet: Any) -> bool:
        """Write one packet (skipped until the first keyframe); returns whether it was written."""
        if packet.dts is None and packet.pts is None:
            return False
        dts = packet.dts if packet.dts is not None else packet.pts
        assert dts is not None
        tb = packet.time_base
        if self._offset is None or self._resegment:
            if not packet.is_keyframe:
                return False
            if self._offset is None:
                self._offset, self._time_base = dts, tb
            elif self._end is not None and self._time_base is not None:
                end_in_new = int(self._end * self._time_base / tb)
                self._offset = dts - end_in_new
                self._time_base = tb
                self._last_dts = None if self._last_dts is None else end_in_new - 1
            self._resegment = False
        step = packet.duration or (max(1, round(1 / (self.fps * tb))) if tb else 1)
        new_dts = dts - self._offset
        if self._last_dts is not None and new_dts <= self._last_dts:
            # A network source that repeats or reorders timestamps: MP4 needs rising DTS.
            self.skipped += 1
            return False
        packet.dts = new_dts
        packet.pts = (packet.pts if packet.pts is not None else dts) - self._offset
        end = max(packet.pts, new_dts) + step  # before mux: it rescales to the stream's base
        packet.stream = self.stream
        try:
            self.container.mux(packet)
        except (av.FFmpegError, ValueError):
            self.skipped += 1  # one damaged packet must not end the recording
            return False
        self._last_dts = new_dts
        self._end = end if self._end is None else max(self._end, end)
        start = end - step
        self._start = start if self._start is None else min(self._start, start)
        self.frames += 1
        if time.monotonic() - self._synced_at >= self._fsync_interval_s and (
            self._sync is None or self._sync.done()
        ):
            # Power loss costs at most the last interval. The fsync runs beside the encoder:
            # on a busy disk it can take seconds, and the encoder must never wait for it.
            self._sync = _FSYNC.submit(os.fsync, self._fd)
            self._synced_at = time.monotonic()
        return True

    @property
    def duration_s(self) -> float:
        if self._end is None or self._start is None or self._time_base is None:
            return 0.0
        return float((self._end - self._start) * self._time_base)

    def close(self) -> None:
        try:
            self.container.close()
        finally:
            if self._sync is not None:
                with contextlib.suppress(OSError):
                    self._sync.result()  # never close the descriptor under a running fsync
            os.fsync(self._fd)
            os.close(self._fd)


def probe(path: Path) -> VideoFacts:
    """Frame count (packets of the video stream) and duration of a recording, without decoding."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise RecordingUnreadable(f"cannot open recording: {exc}") from exc
    with container:
        if not container.streams.video:
            raise RecordingUnreadable("recording has no video stream")
        stream = container.streams.video[0]
        frames, first, end = 0, None, None
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None or packet.is_corrupt:
                    continue
                frames += 1
                first = packet.pts if first is None else min(first, packet.pts)
                stop = packet.pts + (packet.duration or 0)
                end = stop if end is None else max(end, stop)
        except av.FFmpegError:
            pass  # a torn tail after a crash: what was read so far counts
        if frames == 0 or first is None or end is None:
            raise RecordingUnreadable("recording holds no video frames")
        ctx = stream.codec_context
        rate = stream.average_rate
        return VideoFacts(
            frames=frames,
            duration_s=float((end - first) * (stream.time_base or 0)),
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            fps=float(rate) if rate else None,
            profile=ctx.profile,
            level=ctx.level if getattr(ctx, "level", 0) > 0 else None,
        )


def salvage(src: Path, dst: Path, fmt: RecordingFormat) -> None:
    """Remux every intact packet of a crashed recording into `dst` (torn tail dropped)."""
    try:
        source = av.open(str(src))
    except (av.FFmpegError, OSError) as exc:
        raise RecordingUnreadable(f"cannot open crashed recording: {exc}") from exc
    written = 0
    with source:
        if not source.streams.video:
            raise RecordingUnreadable("crashed recording has no video stream")
        stream = source.streams.video[0]
        with av.open(
            str(dst), "w", format=fmt.container, options=container_options(fmt.container)
        ) as out:
            target: Any = out.add_stream_from_template(stream)
            try:
                for packet in source.demux(stream):
                    if packet.size == 0 or packet.dts is None or packet.is_corrupt:
                        continue
                    packet.stream = target
                    out.mux(packet)
                    written += 1
            except av.FFmpegError:
                pass  # torn tail
    if written == 0:
        raise RecordingUnreadable("crashed recording holds no complete frame")
    with open(dst, "rb") as fh:
        os.fsync(fh.fileno())
