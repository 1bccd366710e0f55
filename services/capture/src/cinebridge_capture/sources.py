"""Video sources: any FFmpeg input through PyAV, V4L2 devices through OpenCV.

A source yields `Captured` items in its own thread: the decoded frame (for snapshots, preview
and encoding) and, for compressed network inputs, the packet it came from (for pass-through
recording). A compressed input decodes only as much as its `decode` attribute asks for (set by
the pipeline between items): a pass-through recording needs no pictures at all, so they are
decoded on demand from the packets since the last keyframe (`decode_latest`). File and `lavfi`
inputs are paced to their frame rate so that they behave like a live device; network inputs
arrive at their own pace.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Protocol

import av
import numpy as np

from .settings import SourceConfig

DEFAULT_FPS = Fraction(30)

#: How much of a compressed input the reader decodes: every picture, only reference pictures
#: (a live preview where the codec allows skipping), only keyframes, or nothing.
Decode = Literal["all", "nonref", "keyframes", "none"]
_SKIP_FRAME: dict[str, Any] = {"all": "DEFAULT", "nonref": "NONREF", "keyframes": "NONKEY"}


class SourceUnavailable(RuntimeError):
    """The source could not be opened or stopped delivering frames (the reason says which)."""


@dataclass(frozen=True)
class StreamInfo:
    """What a source delivers; `template` is the PyAV stream for pass-through, if any."""

    codec: str
    width: int
    height: int
    fps: Fraction
    pix_fmt: str | None
    profile: str | None = None
    level: int | None = None
    template: Any = None


@dataclass
class Captured:
    frame: av.VideoFrame | None
    packet: Any
    t: float  # time.monotonic() when the item became available
    media_t: float | None = None  # the source's own timestamp of the frame, in seconds


class FrameSource(Protocol):
    info: StreamInfo
    decode: Decode

    def items(self) -> Iterator[Captured]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class AvInput:
    """How to hand a configured URL to FFmpeg."""

    target: str
    format: str | None
    options: dict[str, str]
    paced: bool
    loop: bool
    compressed: bool


def av_input(url: str) -> AvInput:
    """Map a configured source URL to an FFmpeg input (see README for the accepted forms)."""
    if url.startswith("lavfi:"):
        return AvInput(url[len("lavfi:") :], "lavfi", {}, paced=True, loop=False, compressed=False)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        query = urllib.parse.parse_qs(parsed.query)
        loop = query.get("loop", ["0"])[0] in ("1", "true", "yes")
        path = urllib.parse.unquote(parsed.path)
        return AvInput(path, None, {}, paced=True, loop=loop, compressed=True)
    options: dict[str, str] = {}
    if parsed.scheme in ("rtsp", "rtsps"):
        options["rtsp_transport"] = "tcp"
    if parsed.scheme == "udp" and "fifo_size" not in parsed.query:
        # A 1080p GOP is several MB: a larger receive FIFO survives a slow reader briefly.
        sep = "&" if parsed.query else "?"
        url = f"{url}{sep}fifo_size=1000000&overrun_nonfatal=1"
    return AvInput(url, None, options, paced=False, loop=False, compressed=True)


class AvSource:
    """An FFmpeg input opened with PyAV (lavfi, file, RTSP, SRT, UDP/RTP, HTTP)."""

    def __init__(
        self,
        config: SourceConfig,
        open_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        self.decode: Decode = "all"
        self._skip: str = "DEFAULT"
        self._synced = True  # the decoder has seen every packet since a keyframe
        self.spec = av_input(config.url)
        try:
            self.container = av.open(
                self.spec.target,
                format=self.spec.format,
                options=self.spec.options,
                timeout=(open_timeout_s, read_timeout_s),
            )
        except (av.FFmpegError, OSError) as exc:
            raise SourceUnavailable(f"cannot open source {config.name}: {exc}") from exc
        if not self.container.streams.video:
            self.container.close()
            raise SourceUnavailable(f"source {config.name} has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        ctx = self.stream.codec_context
        fps = self.stream.average_rate or self.stream.guessed_rate or DEFAULT_FPS
        passthrough = self.spec.compressed and ctx.name in ("h264", "mpeg2video")
        self.info = StreamInfo(
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            fps=Fraction(fps),
            pix_fmt=ctx.pix_fmt,
            profile=ctx.profile,
            level=_level(ctx),
            template=self.stream if passthrough else None,
        )

    def items(self) -> Iterator[Captured]:
        pacer = Pacer()
        while True:
            try:
                for packet in self.container.demux(self.stream):
                    if packet.size == 0:  # end of input (flush packet)
                        break
                    yield from self._decode(packet, pacer)
            except (av.FFmpegError, OSError) as exc:
                raise SourceUnavailable(f"source read failed: {exc}") from exc
            if not self.spec.loop:
                raise SourceUnavailable("source ended")
            self.container.seek(0)
            pacer.restart()

    def _decode(self, packet: Any, pacer: Pacer) -> Iterator[Captured]:
        keep = packet if self.info.template is not None else None
        # A compressed file is paced by its packets: they may not be decoded at all.
        paced_packet = self.spec.paced and keep is not None
        # Matroska gives the first packets of a stream with B-frames no DTS, raw H.264 none at
        # all: such a packet is still media, paced by whichever time it has.
        stamp = packet.dts if packet.dts is not None else packet.pts
        if paced_packet and stamp is not None and packet.time_base is not None:
            pacer.wait(float(stamp * packet.time_base))
        if keep is not None and not self._wants_picture(packet):
            yield Captured(None, keep, time.monotonic())
            return
        try:
            frames = packet.decode()
        except av.FFmpegError:
            frames = []  # a damaged packet from the network: keep going (it is still recorded)
        if not frames:
            yield Captured(None, keep, time.monotonic())
        for frame in frames:
            media_t = None
            if frame.pts is not None and frame.time_base is not None:
                media_t = float(frame.pts * frame.time_base)
                if self.spec.paced and not paced_packet:
                    pacer.wait(media_t)
            yield Captured(frame, keep, time.monotonic(), media_t)
            keep = None

    def _wants_picture(self, packet: Any) -> bool:
        """Whether to decode this packet of a compressed input, as `decode` asks right now."""
        if self.decode == "none":
            self._synced = False
            return False
        if not self._synced:
            # Decoding resumes: references are only complete from the next keyframe on, and
            # pictures still in the decoder's threads are from long ago.
            if not packet.is_keyframe:
                return False
            self.stream.codec_context.flush_buffers()
            self._synced = True
        skip = _SKIP_FRAME[self.decode]
        if skip != self._skip:
            self.stream.codec_context.skip_frame = skip
            self._skip = skip
        return True

    def close(self) -> None:
        self.container.close()


def decode_latest(template: Any, packets: list[Any]) -> av.VideoFrame | None:
    """The newest picture of `packets` (a keyframe and what followed it), decoded now.

    A fresh decoder per call: no state shared with the reader thread, and the last picture in
    presentation order comes out at the flush even with B-frames. Two frame threads decode a
    1080p GOP ~1.8x faster than one (the snapshot waits for it); a lone keyframe (a thumbnail)
    decodes in one thread, at ~60% of the CPU that starting frame threads costs.
    """
    src = template.codec_context
    ctx: Any = av.CodecContext.create(src.name, "r")
    if src.extradata:
        ctx.extradata = src.extradata
    if len(packets) > 1:
        ctx.thread_type = "FRAME"
        ctx.thread_count = 2
    else:
        ctx.thread_count = 1
    latest = None
    for packet in packets:
        try:
            for frame in ctx.decode(packet):
                latest = frame
        except av.FFmpegError:
            continue  # a damaged packet: the picture is concealed by the decoder
    try:
        for frame in ctx.decode(None):
            latest = frame
    except av.FFmpegError:
        pass
    return latest


def _level(ctx: Any) -> int | None:
    level = getattr(ctx, "level", None)
    return int(level) if isinstance(level, int) and level > 0 else None


class Pacer:
    """Releases frames of a file or test pattern at wall-clock speed, like a live device."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.base: float | None = None
        self.first = 0.0

    def wait(self, media_t: float) -> None:
        now = time.monotonic()
        if self.base is None or media_t < self.first:
            self.base, self.first = now, media_t
            return
        due = self.base + (media_t - self.first)
        if due - now > 0:
            time.sleep(min(due - now, 1.0))
        elif now - due > 1.0:
            # Far behind (machine overloaded): continue live from here rather than burst.
            self.base, self.first = now, media_t


class CvSource:
    """A V4L2 device (frame grabber, USB/HDMI capture card, webcam) through OpenCV."""

    def __init__(self, config: SourceConfig, read_timeout_s: float) -> None:
        import cv2

        self.decode: Decode = "all"  # raw pictures: nothing to skip
        device = urllib.parse.urlsplit(config.url).path
        self.cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not self.cap.isOpened():
            raise SourceUnavailable(f"cannot open V4L2 device of source {config.name}")
        if config.pixel_format:
            self.cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*config.pixel_format))
        if config.width and config.height:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
        if config.fps:
            self.cap.set(cv2.CAP_PROP_FPS, config.fps)
        self.cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_timeout_s * 1000)
        # The device answers with the nearest mode it offers: report what it actually chose.
        fps = self.cap.get(cv2.CAP_PROP_FPS) or float(DEFAULT_FPS)
        self.info = StreamInfo(
            codec="rawvideo",
            width=int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=Fraction(fps).limit_denominator(1001),
            pix_fmt="bgr24",
        )

    def items(self) -> Iterator[Captured]:
        while True:
            ok, image = self.cap.read()
            if not ok or image is None:
                raise SourceUnavailable("V4L2 device stopped delivering frames")
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(image, dtype=np.uint8), format="bgr24"
            )
            yield Captured(frame, None, time.monotonic())

    def close(self) -> None:
        self.cap.release()


def is_network(url: str) -> bool:
    """A network stream (RTSP, SRT, UDP/RTP, HTTP): it arrives at its own pace, received by
    threads FFmpeg starts while opening it (`udp-rx`)."""
    return not url.startswith("v4l2://") and not av_input(url).paced


def open_source(
    config: SourceConfig,
    open_timeout_s: float,
    read_timeout_s: float,
) -> FrameSource:
    if config.url.startswith("v4l2://"):
        return CvSource(config, read_timeout_s)
    return AvSource(config, open_timeout_s, read_timeout_s)
