"""Remux (no re-encode) and transcode of recordings with PyAV, file to file, bounded memory.

`remux` copies packets into the container the transfer syntax allows and cuts the stream at
key frames into independently playable segments when one would exceed the fragment limit
(PS3.5 8.2.7 note: "multiple SOP Instances, each … an independent and playable bit stream").
`transcode` decodes and re-encodes to an `EncodeTarget`. Both run in a worker thread; they
report progress through a callback and stop when `cancel` is set.
"""

from __future__ import annotations

import errno
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from .errors import RESOURCE_ERRNOS, BadMedia, Cancelled, ConversionError, TransientFailure
from .probe import open_input
from .rules import EncodeTarget, audio_allowed, fit
from .timestamps import WINDOW, VideoClock, display_order, frame_ticks

Progress = Callable[[float, str], None]
MUX_FORMAT = {"mp4": "mp4", "mpegts": "mpegts"}


def _ffmpeg_failure(exc: av.error.FFmpegError, what: str) -> Exception:
    """A transient failure when a resource ran out (the media store is full, ...): FFmpeg reports
    it like any other error, but it says nothing about the input. Otherwise the media is bad."""
    if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        return TransientFailure(
            f"{what}: {exc.strerror} ({'the media store is full' if full else 'out of resources'})"
        )
    return BadMedia(f"{what}: {exc.strerror}")


def _seconds(value: int | None, time_base: Fraction | None) -> float:
    return float(value * time_base) if value is not None and time_base is not None else 0.0


@dataclass(frozen=True)
class Segment:
    path: Path
    frames: int
    duration_s: float


def remux(
    src: Path,
    *,
    ts_uid: str,
    container: str,
    new_path: Callable[[], Path],
    max_bytes: int,
    progress: Progress,
    cancel: threading.Event,
) -> list[Segment]:
    """Copy the video (and allowed audio) packets into `container`, split at key frames."""
    budget = int(max_bytes * 0.9) - (1 << 16)
    clock = _clock_for(src, cancel)
    with open_input(src) as inp:
        video = inp.streams.video[0]
        audio = [
            s for s in inp.streams.audio if audio_allowed(s.codec_context.name, ts_uid, container)
        ]
        duration = _seconds(video.duration, video.time_base)
        writer = _SegmentWriter(container, new_path, [video, *audio])

        def put(packet: Any, is_video: bool) -> None:
            if is_video and packet.is_keyframe and writer.bytes >= budget and writer.frames:
                writer.cut(packet)
            writer.write(packet, is_video)
            if is_video and writer.frames % 256 == 0 and duration:
                progress(min(1.0, _seconds(packet.dts, video.time_base) / duration), "remux")

        try:
            for packet in inp.demux([video, *audio]):
                if cancel.is_set():
                    raise Cancelled()
                if packet.size == 0 or packet.is_corrupt:
                    continue  # flush packets; a cut-off last packet would not decode
                if packet.stream is video:
                    for ready in clock.feed(packet):
                        put(ready, True)
                elif packet.dts is not None or packet.pts is not None:
                    packet.dts = packet.pts if packet.dts is None else packet.dts
                    packet.pts = packet.dts if packet.pts is None else packet.pts
                    put(packet, False)
            for ready in clock.flush():
                put(ready, True)
        except av.error.FFmpegError as exc:
            writer.abort()
            raise _ffmpeg_failure(exc, "the recording cannot be remuxed") from exc
        except BaseException:
            writer.abort()
            raise
        segments = writer.finish()
    for segment in segments:
        if segment.path.stat().st_size > max_bytes:
            raise ConversionError(
                f"a key-frame interval is larger than the fragment limit of {max_bytes} bytes"
            )
    return segments


def _clock_for(src: Path, cancel: threading.Event) -> VideoClock:
    """A clock for the video stream; a stream without presentation times and with B-frames
    first gets its display order from one decode pass."""
    with open_input(src) as inp:
        video = inp.streams.video[0]
        reordered = bool(video.codec_context.has_b_frames)
        ticks = frame_ticks(video)
        head = list(itertools.islice((p for p in inp.demux(video) if p.size), WINDOW))
        missing = any(p.pts is None for p in head)
    ranks = display_order(src, cancel) if missing and reordered else None
    return VideoClock(ticks, reordered=reordered, ranks=ranks)


class _SegmentWriter:
    """Output files of a remux; timestamps of each later segment start at zero."""

    def __init__(self, container: str, new_path: Callable[[], Path], streams: list[Any]) -> None:
        self.container = container
        self.new_path = new_path
        self.sources = streams
        self.done: list[Segment] = []
        self.offset_s = 0.0
        self.last_dts_s = 0.0
        self._open()

    def _open(self) -> None:
        self.path = self.new_path()
        self.out = av.open(str(self.path), "w", format=MUX_FORMAT[self.container])
        self.map = {s.index: self.out.add_stream_from_template(s) for s in self.sources}
        self.bytes = 0
        self.frames = 0

    def write(self, packet: Any, is_video: bool) -> None:
        tb = packet.time_base
        if self.offset_s:
            shift = round(self.offset_s / tb)
            if packet.dts - shift < 0 and not is_video:
                return  # audio from before this segment's first key frame
            packet.dts -= shift
            if packet.pts is not None:
                packet.pts -= shift
        if is_video:
            self.frames += 1
            self.last_dts_s = float(packet.dts * tb) + self.offset_s
        packet.stream = self.map[packet.stream.index]
        self.out.mux(packet)
        self.bytes += packet.size

    def cut(self, keyframe: Any) -> None:
        self._close()
        self.offset_s = float(keyframe.dts * keyframe.time_base)
        self._open()

    def _close(self) -> None:
        self.out.close()
        frames = self.frames
        duration = max(0.0, self.last_dts_s - self.offset_s)
        self.done.append(Segment(self.path, frames, duration))

    def finish(self) -> list[Segment]:
        self._close()
        return self.done

    def abort(self) -> None:
        try:
            self.out.close()
        except Exception:  # noqa: S110 - the original error is what matters
            pass
        for path in [*(s.path for s in self.done), self.path]:
            path.unlink(missing_ok=True)


def transcode(
    src: Path,
    target: EncodeTarget,
    dest: Path,
    *,
    fields: str,
    progress: Progress,
    cancel: threading.Event,
    timeout_s: float,
    rotation: int = 0,
) -> int:
    """Re-encode the video stream to `target` (audio is not kept); returns the frame count.

    `fields` (interlaced sources): "frame" deinterlaces to one frame per frame, "field" to one
    frame per field (50i -> 50p), "tff"/"bff" keep the fields in that order (MPEG-2 targets);
    "progressive" for a progressive source. `rotation` (degrees counter-clockwise, the source's
    display matrix) is applied to the pixels: the output is upright and carries no matrix."""
    deadline = time.monotonic() + timeout_s
    frames = 0
    try:
        with (
            open_input(src) as inp,
            av.open(str(dest), "w", format=MUX_FORMAT[target.container]) as out,
        ):
            video = inp.streams.video[0]
            video.thread_type = "AUTO"
            duration = _seconds(video.duration, video.time_base)
            graph = _graph(video, target, fields, rotation)
            options = dict(target.options)
            if fields in ("tff", "bff"):
                options["flags"] = "+ildct+ilme"  # field-based DCT and motion (ISO/IEC 13818-2)
            enc: Any = out.add_stream(target.codec, rate=target.rate, options=options)
            enc.width, enc.height, enc.pix_fmt = target.width, target.height, "yuv420p"
            enc.codec_context.time_base = Fraction(1) / target.rate
            # PyAV defaults to slice threads; libx264 then runs sliced threading, slower than
            # the frame threads the ffmpeg command line gets (libx264.c: b_sliced_threads).
            enc.codec_context.thread_type = "AUTO"
            enc.codec_context.thread_count = 0
            if target.bit_rate:
                enc.bit_rate = target.bit_rate
            for frame in inp.decode(video):
                if cancel.is_set():
                    raise Cancelled()
                if time.monotonic() > deadline:
                    raise BadMedia(f"transcoding took longer than the limit of {timeout_s:.0f} s")
                graph.push(frame)
                frames += _drain(graph, enc, out, frames)
                if frames % 64 == 0 and duration and frame.time is not None:
                    progress(min(1.0, frame.time / duration), "transcode")
            graph.push(None)
            frames += _drain(graph, enc, out, frames)
            for packet in enc.encode(None):
                out.mux(packet)
    except av.error.FFmpegError as exc:
        dest.unlink(missing_ok=True)
        raise _ffmpeg_failure(exc, "the recording cannot be transcoded") from exc
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if frames == 0:
        dest.unlink(missing_ok=True)
        raise BadMedia("no frame of the recording could be decoded")
    return frames


#: Filters that turn a picture upright, by its display rotation (as the ffmpeg tool's autorotate).
UPRIGHT = {
    90: (("transpose", "cclock"),),
    180: (("hflip", ""), ("vflip", "")),
    270: (("transpose", "clock"),),
}


def _graph(
    video: av.video.stream.VideoStream, target: EncodeTarget, fields: str, rotation: int = 0
) -> av.filter.Graph:
    ctx = video.codec_context
    sar = video.sample_aspect_ratio or ctx.sample_aspect_ratio or 1
    shown = max(2, round(ctx.width * sar))  # square-pixel width of the picture
    shown, tall = (ctx.height, shown) if rotation in (90, 270) else (shown, ctx.height)
    width, height = fit(shown, tall, target.width, target.height, upscale=target.exact_size)
    graph = av.filter.Graph()
    chain = [graph.add_buffer(template=video)]
    if fields in ("frame", "field"):
        chain.append(graph.add("bwdif", f"mode=send_{fields}"))
    # Turned before the scale, which then sizes the upright picture (its pixels made square).
    chain += [graph.add(name, args) for name, args in UPRIGHT.get(rotation, ())]
    chain.append(graph.add("fps", f"fps={target.rate.numerator}/{target.rate.denominator}"))
    keep = fields in ("tff", "bff")
    chain.append(graph.add("scale", f"{width}:{height}" + (":interl=1" if keep else "")))
    if (width, height) != (target.width, target.height):
        chain.append(graph.add("pad", f"{target.width}:{target.height}:(ow-iw)/2:(oh-ih)/2"))
    chain.append(graph.add("setsar", "1"))
    if keep:
        chain.append(graph.add("setfield", fields))
    chain.append(graph.add("format", "yuv420p"))
    chain.append(graph.add("buffersink"))
    for a, b in itertools.pairwise(chain):
        a.link_to(b)
    graph.configure()
    return graph


def _drain(
    graph: av.filter.Graph,
    enc: Any,
    out: av.container.OutputContainer,
    start: int,
) -> int:
    count = 0
    while True:
        try:
            frame: Any = graph.pull()
        except (BlockingIOError, av.error.EOFError):
            return count
        # The stream's time base changes once the muxer writes its header (MPEG-TS: 1/90000);
        # frames are numbered in the encoder's own 1/rate.
        frame.pts = start + count
        frame.time_base = enc.codec_context.time_base
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in enc.encode(frame):
            out.mux(packet)
        count += 1
