"""Probing captured media with PyAV (videos) and the JPEG/PNG headers (stills), within limits.

Nothing here decodes a whole file: a video is demuxed header-first (plus one decoded frame for
interlacing; a container without an index is demuxed to its end to count its packets, and that
pass keeps its last GOP for the decode check; MP4/MOV boxes are read by isobmff.py), a still is
read up to its frame header (still_probe.py). Every failure is a `BadMedia` with a reason a
clinician's IT team can act on.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from .errors import BadMedia
from .isobmff import (
    MP4_BRANDS,
    box_overruns,
    complete_box,
    fragmented_sample_count,
    mp4_brand,
)
from .still_probe import StillProbe, probe_still

# Re-exported: the converter's modules and tools import them from here.
__all__ = [
    "LAST_GOP_BYTES",
    "MP4_BRANDS",
    "READABLE",
    "SAFE_INPUT",
    "CountedPass",
    "StillProbe",
    "VideoProbe",
    "container_of",
    "fragmented_sample_count",
    "open_input",
    "probe_still",
    "probe_video",
    "variable_rate",
]

#: The last GOP is kept in memory to decode it; longer GOPs skip that half of the check.
LAST_GOP_BYTES = 64 << 20


@dataclass(frozen=True)
class CountedPass:
    """What the probe's pass over every packet (a container without an index) leaves to the
    decode check of the same file, so that the check need not demux the whole file again."""

    packets: int  # whole packets of the video stream
    #: The packets from the last key frame to the end; None when they exceed LAST_GOP_BYTES.
    last_gop: tuple[Any, ...] | None


@dataclass(frozen=True)
class VideoProbe:
    """What the stream really is; the DICOM attributes and the remux/transcode choice follow."""

    container: str  # "mp4", "mpegts", "mpeg", "mov", "matroska", "avi", ...
    codec: str  # FFmpeg codec name: h264, hevc, mpeg2video, mjpeg ...
    profile: str | None
    level: int | None  # H.264 level_idc (41 = 4.1); MPEG-2 level code; None if unknown
    width: int  # displayed size (after SPS cropping)
    height: int
    rate: Fraction  # frames per second (average)
    interlaced: bool
    pix_fmt: str
    duration_s: float
    frames: int  # from the container index when exact (MP4 stsz), else counted packets
    audio_codecs: tuple[str, ...]
    other_streams: int  # subtitle/data streams that no DICOM video container carries
    size: int
    #: The file ends inside a box/packet (capture cut off): remux keeps only whole packets.
    truncated: bool = False
    #: Sample (pixel) aspect ratio, width/height of one pixel; 1 = square.
    sar: Fraction = Fraction(1)
    #: The finest rate all timestamps sit on (FFmpeg's r_frame_rate); = rate for constant rate.
    base_rate: Fraction | None = None
    #: Frame durations vary: the average rate is no rate the pictures were taken at.
    vfr: bool = False
    bit_rate: int = 0  # bits per second of the video stream (container's when not known)
    top_field_first: bool = True
    #: Degrees the picture must be turned counter-clockwise to be shown upright (the container's
    #: display matrix, e.g. a phone held upright): 0, 90, 180 or 270.
    rotation: int = 0
    #: Set when `frames` was counted packet by packet (no index).
    counted: CountedPass | None = field(default=None, compare=False, repr=False)

    @property
    def display_width(self) -> int:
        """Width of the picture shown with square pixels (720 at 64:45 -> 1024)."""
        return max(2, round(self.width * self.sar / 2) * 2)

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) of the picture as shown: square pixels, turned upright."""
        if self.rotation in (90, 270):
            return self.height, self.display_width
        return self.display_width, self.height


#: FFmpeg may only read local files with these demuxers: a hostile "video" that is really a
#: playlist (HLS, concat) or a reference movie must not make FFmpeg fetch URLs or other files.
SAFE_INPUT = {
    "protocol_whitelist": "file",
    # MXF (SMPTE 377M) is what broadcast-style recorders write (DNxHD, XDCAM); GIF is an
    # animated picture a recording may arrive as. Neither demuxer opens other files.
    "format_whitelist": "mov,mpegts,mpeg,matroska,avi,mpegvideo,h264,hevc,mjpeg,mxf,gif",
}


def open_input(path: Path, **extra: str) -> av.container.InputContainer:
    return av.open(str(path), options={**SAFE_INPUT, **extra})


def container_of(path: Path, ffmpeg_format: str) -> str:
    """Name the container; FFmpeg calls MP4 and QuickTime the same, the ftyp brand does not."""
    if ffmpeg_format.startswith("mov,mp4"):
        brand = mp4_brand(path)
        return "mp4" if brand in MP4_BRANDS else "mov"
    return ffmpeg_format.split(",")[0]


def probe_video(path: Path, *, max_pixels: int, max_duration_s: float) -> VideoProbe:
    size = path.stat().st_size
    if size == 0:
        raise BadMedia("the recording is an empty file (0 bytes)")
    try:
        container = open_input(path, probesize="20000000")
    except av.error.FFmpegError as exc:
        raise BadMedia(_unreadable(path, exc)) from exc
    with container:
        if not container.streams.video:
            raise BadMedia(_cut_index(path) or "the file has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        width, height = ctx.width, ctx.height
        if width <= 0 or height <= 0:
            raise BadMedia("the video stream declares no picture size")
        if width * height > max_pixels:
            raise BadMedia(f"picture {width}x{height} exceeds the limit of {max_pixels} pixels")
        rate = stream.average_rate or stream.guessed_rate or ctx.framerate
        if not rate or rate <= 0:
            raise BadMedia("the video stream has no frame rate")
        duration_s = _duration(container, stream)
        if duration_s > max_duration_s:
            raise BadMedia(
                f"recording of {duration_s:.0f} s exceeds the limit of {max_duration_s:.0f} s"
            )
        name = container_of(path, container.format.name)
        frames = int(stream.frames) if name in ("mp4", "mov") else 0
        if name in ("mp4", "mov") and frames <= 0:
            frames = fragmented_sample_count(path, stream.id) or 0
        exact = frames > 0
        (interlaced, tff, rotation), counted, corrupt, last_gop = _scan(
            container, stream, count=not exact
        )
        frames = frames or counted
        truncated = corrupt or (name in ("mp4", "mov") and box_overruns(path))
        if frames <= 0:
            raise BadMedia("the video stream holds no decodable frame (truncated or empty)")
        audio = tuple(s.codec_context.name for s in container.streams.audio)
        others = len(container.streams) - len(container.streams.video) - len(audio)
        return VideoProbe(
            container=name,
            codec=ctx.name,
            profile=ctx.profile,
            level=ctx.level if ctx.level and ctx.level > 0 else None,
            width=width,
            height=height,
            rate=Fraction(rate),
            interlaced=interlaced,
            pix_fmt=ctx.pix_fmt or "",
            duration_s=duration_s,
            frames=frames,
            audio_codecs=audio,
            other_streams=others + len(container.streams.video) - 1,
            size=size,
            truncated=truncated,
            sar=_sar(stream),
            base_rate=Fraction(stream.base_rate) if stream.base_rate else None,
            vfr=variable_rate(Fraction(rate), stream.base_rate),
            bit_rate=_bit_rate(stream, container, size, duration_s),
            top_field_first=tff,
            rotation=rotation,
            counted=None if exact else CountedPass(counted, last_gop),
        )


#: What `SAFE_INPUT` reads, in the words of a reason shown to the user.
READABLE = "MP4, MOV, MPEG-TS, MPEG-PS, Matroska/WebM, AVI, MXF, GIF, raw H.264/HEVC/MPEG-2"


def _unreadable(path: Path, exc: av.error.FFmpegError) -> str:
    """Why FFmpeg cannot open a recording, in terms of the file."""
    if cut := _cut_index(path):
        return cut
    if exc.errno == errno.EINVAL:
        # A playlist or any format outside SAFE_INPUT is refused by FFmpeg (invalid argument).
        return f"not a video format the converter reads ({READABLE})"
    return f"not a video file FFmpeg can read, or truncated: {exc.strerror}"


def _cut_index(path: Path) -> str | None:
    """The reason for an MP4/MOV whose index is missing or cut off, else None."""
    if mp4_brand(path) is not None and not complete_box(path, b"moov"):
        # A recorder killed before it wrote the index (moov at the end, ISO/IEC 14496-12 8.2.1):
        # the samples are there but nothing says where each one is.
        return "truncated MP4/MOV: it has no complete index (moov box), the recording was cut off"
    return None


def _bit_rate(stream: Any, container: Any, size: int, duration_s: float) -> int:
    if stream.bit_rate:
        return int(stream.bit_rate)
    if duration_s > 0:
        return int(size * 8 / duration_s)
    return int(container.bit_rate or 0)


def variable_rate(average: Fraction, base: Fraction | None) -> bool:
    """Whether the average rate is not the rate the timestamps tick at (beyond 1 %): frames were
    left out or held (a `select` filter, a screen recorder). A base rate of twice the average
    is a field rate (interlaced or field-coded), not a variable one."""
    if not base or base <= 0:
        return False
    ratio = float(base) / float(average)
    return not (abs(ratio - 1) <= 0.01 or abs(ratio - 2) <= 0.02)


def _sar(stream: av.video.stream.VideoStream) -> Fraction:
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return Fraction(sar) if sar and sar > 0 else Fraction(1)


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return 0.0


def _scan(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, *, count: bool
) -> tuple[tuple[bool, bool, int], int, bool, tuple[Any, ...] | None]:
    """Decode the first frame (interlacing, field order and display rotation, proof the stream
    decodes); if asked,
    count the whole packets, say whether a cut-off (corrupt) one was met, and keep the packets
    from the last key frame on (None when over LAST_GOP_BYTES)."""
    interlaced: bool | None = None
    tff, rotation = True, 0
    packets, corrupt = 0, False
    last: list[Any] | None = []
    last_bytes = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.is_corrupt:
                corrupt = True
                continue
            packets += 1
            if interlaced is None:
                for frame in packet.decode():
                    interlaced = bool(frame.interlaced_frame)
                    # AVFieldOrder: BB (3) and TB (4) show the bottom field first.
                    tff = stream.codec_context.field_order not in (3, 4)
                    rotation = _rotation(frame)
                    break
            if interlaced is not None and not count:
                break
            if packet.is_keyframe:
                last, last_bytes = [], 0
            if last is not None:
                last.append(packet)
                last_bytes += packet.size
                if last_bytes > LAST_GOP_BYTES:
                    last = None
    except av.error.FFmpegError as exc:
        raise BadMedia(f"the video stream cannot be read (truncated?): {exc.strerror}") from exc
    if interlaced is None:
        raise BadMedia("no frame of the video stream decodes (truncated or corrupt file)")
    return (interlaced, tff, rotation), packets, corrupt, tuple(last) if last is not None else None


def _rotation(frame: av.VideoFrame) -> int:
    """The display matrix's turn (ISO/IEC 14496-12 8.5.3 `tkhd` matrix, which FFmpeg attaches
    to decoded frames), to the nearest quarter turn; 0 without one."""
    try:
        degrees = float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):
        return 0
    return round(degrees / 90) % 4 * 90
