"""Crash-safe recording files: fragmented MP4 / MPEG-TS writer, probe, and salvage after a crash.

Fragmented MP4 (`empty_moov` + a fragment per keyframe, at most one second) and MPEG-TS need no
index at the end: a crash or power loss leaves every completed fragment playable. The writer
queues each packet for a thread of its own (a stalled disk never holds the encoder) and fsyncs
every few seconds; `salvage` remuxes what survived into a clean file and counts its frames and
duration.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections import deque
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


#: Recording bytes that may wait for a stalled disk before the encoder has to wait (~1 min of
#: 1080p H.264); past it, the encoder blocks rather than memory growing without bound.
SINK_LIMIT_BYTES = 64 << 20

#: FFmpeg's I/O buffer in front of `BackgroundFile`: a 1 s MP4 fragment of 1080p H.264 leaves
#: in one or two Python write calls (and writer wake-ups) instead of ~20 at FFmpeg's 32 KB.
#: Crash safety is unchanged: FFmpeg flushes it after every packet (`flush_packets`).
IO_BUFFER_BYTES = 1 << 20


#: Write errors that mean "no room left" (disk or quota full, file size limit): a state of the
#: volume, not a fault of the recording; what was written before stays.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def describe_write_error(exc: OSError) -> str:
    """`disk full (No space left on device)` or `write failed (...)`, for logs and operators."""
    kind = "disk full" if exc.errno in DISK_FULL_ERRNOS else "write failed"
    return f"{kind} ({exc.strerror or exc})"


class BackgroundFile:
    """A write-only file for FFmpeg's muxer whose writes a thread of its own carries out.

    A shared disk under writeback pressure can block a write() for seconds; the muxer runs on
    the encoder's thread, so FFmpeg writing straight to the file let one such stall cost a
    recording all its frames (the encoder queue overflowed). Here the encoder only queues bytes;
    the writer thread waits for the disk. Bytes reach the kernel in order, usually within
    milliseconds, so a crash still leaves everything up to the last moments. A write error is
    raised to the next caller of `write` and by `close`.
    """

    def __init__(self, path: Path, limit: int = SINK_LIMIT_BYTES) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._written = 0
        self._closing = False
        self._error: OSError | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="recording-writer", daemon=True)
        self._thread.start()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        chunk = bytes(data)
        with self._cond:
            while self._error is None and self._queued and self._queued + len(chunk) > self._limit:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._chunks.append(chunk)
            self._queued += len(chunk)
            self._cond.notify_all()
        return len(chunk)

    def tell(self) -> int:
        with self._cond:
            return self._written + self._queued

    @property
    def error(self) -> OSError | None:
        """The write error that stopped the file (nothing after it is written)."""
        return self._error

    def flush(self) -> None:
        """FFmpeg flushes after each packet; the bytes are already on their way."""

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks and not self._closing:
                    self._cond.wait()
                if not self._chunks:
                    return
                batch = list(self._chunks)
                self._chunks.clear()
            data = b"".join(batch)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view) :]
            except OSError as exc:
                with self._cond:
                    self._error = exc
                    self._chunks.clear()
                    self._queued = 0
                    self._cond.notify_all()
                return
            with self._cond:
                self._queued -= len(data)
                self._written += len(data)
                self._cond.notify_all()

    def close(self) -> None:
        """Write what is queued, then close (the caller fsyncs `fd` before this)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def release(self) -> None:
        os.close(self.fd)


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
        # FFmpeg muxes into our file object: a stalled disk holds its writer thread, not us.
        self._sink = BackgroundFile(path)
        self._fd = self._sink.fd
        self.container = av.open(
            self._sink,
            "w",
            format=fmt.container,
            options=container_options(fmt.container),
            buffer_size=IO_BUFFER_BYTES,
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
        if self._sink.error is not None or (packet.dts is None and packet.pts is None):
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
        except (av.FFmpegError, ValueError, OSError):
            self.skipped += 1  # one damaged packet (or a failed write) must not end the recording
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

    @property
    def failed(self) -> OSError | None:
        """The write error (disk full, I/O error) that cut the file short, if one happened."""
        return self._sink.error

    def close(self) -> OSError | None:
        """Finish and close the file; returns the write error that cut it short, if any.

        A disk that fills up is a state, not a crash: the fragments written before the error
        stay playable (each is complete on its own), so the error is returned for the caller to
        record, never raised. Other failures of the muxer are raised as before.
        """
        error: OSError | None = None
        try:
            try:
                self.container.close()
            except (av.FFmpegError, OSError):
                if self._sink.error is None:
                    raise  # not a write failure: a fault of ours
            finally:
                with contextlib.suppress(OSError):  # the same error, kept in _sink.error
                    self._sink.close()
            error = self._sink.error
        finally:
            if self._sync is not None:
                with contextlib.suppress(OSError):
                    self._sync.result()  # never close the descriptor under a running fsync
            try:
                os.fsync(self._fd)
            except OSError as exc:  # delayed allocation may report a full disk only here
                error = error or exc
            finally:
                self._sink.release()
        return error


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
