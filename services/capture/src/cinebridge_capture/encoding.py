"""Recording formats and the video encoder: H.264 High ≤ L4.1 in MP4, or MPEG-2 in MPEG-TS.

The format follows the station's video transfer syntax (statement Table 24): MPEG-2 MP@ML
(.100), MPEG-2 MP@HL (.101), H.264 High Profile L4.1 (.102) or BD-compatible (.103).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import av

from .sources import StreamInfo

Mode = Literal["h264", "mpeg2-ml", "mpeg2-hl"]

#: PS3.5 Table A-4 transfer syntaxes to recording modes.
MODE_BY_TRANSFER_SYNTAX: dict[str, Mode] = {
    "1.2.840.10008.1.2.4.100": "mpeg2-ml",
    "1.2.840.10008.1.2.4.101": "mpeg2-hl",
    "1.2.840.10008.1.2.4.102": "h264",
    "1.2.840.10008.1.2.4.103": "h264",
}

#: H.264 Annex A Table A-1, level 4.1: macroblocks per second and per frame.
L41_MAX_MBPS = 245_760
L41_MAX_FS = 8_192
PASSTHROUGH_H264_PROFILES = frozenset({"High", "Main", "Constrained Baseline"})


@dataclass(frozen=True)
class RecordingFormat:
    mode: Mode
    container: str
    ext: str
    mime: str
    codec: str


def recording_format(mode: Mode) -> RecordingFormat:
    if mode == "h264":
        return RecordingFormat(mode, "mp4", "mp4", "video/mp4", "h264")
    # MPEG-TS needs no index: a crash leaves a file playable up to its last packet.
    return RecordingFormat(mode, "mpegts", "ts", "video/mp2t", "mpeg2video")


def mode_for(setting: str, transfer_syntax: str | None) -> Mode:
    if setting != "auto":
        return setting  # type: ignore[return-value]
    return MODE_BY_TRANSFER_SYNTAX.get(transfer_syntax or "", "h264")


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def target_geometry(
    mode: Mode, width: int, height: int, fps: Fraction
) -> tuple[int, int, Fraction]:
    """Output size and rate that the transfer syntax accepts, keeping the source's where it can."""
    if mode == "mpeg2-ml":
        # ISO 13818-2 MP@ML: 720x576 at 25 Hz or 720x480 at 29.97/30 Hz.
        return (720, 576, fps) if fps <= 25 else (720, 480, min(fps, Fraction(30)))
    scale = min(1.0, 1920 / width, 1080 / height)
    w, h = _even(width * scale), _even(height * scale)
    if mode == "mpeg2-hl":
        return w, h, min(fps, Fraction(60))
    mbs = ((w + 15) // 16) * ((h + 15) // 16)
    max_fps = Fraction(L41_MAX_MBPS, max(1, mbs))
    return w, h, min(fps, max_fps) if mbs <= L41_MAX_FS else Fraction(30)


def passthrough_ok(mode: Mode, info: StreamInfo) -> bool:
    """Whether the source's own compressed stream fits the recording mode without re-encoding."""
    if info.template is None or info.pix_fmt not in ("yuv420p", "yuvj420p"):
        return False
    if mode == "h264":
        mbs = ((info.width + 15) // 16) * ((info.height + 15) // 16)
        return (
            info.codec == "h264"
            and info.profile in PASSTHROUGH_H264_PROFILES
            and (info.level or 99) <= 41
            and mbs <= L41_MAX_FS
            and mbs * info.fps <= L41_MAX_MBPS
        )
    max_w, max_h = (720, 576) if mode == "mpeg2-ml" else (1920, 1152)
    return info.codec == "mpeg2video" and info.width <= max_w and info.height <= max_h


@dataclass(frozen=True)
class EncoderSettings:
    encoder: str = "libx264"
    preset: str = "ultrafast"
    tune: str = "zerolatency"
    x264_params: str = "8x8dct=1"
    crf: int = 23
    threads: int = 0
    gop_s: float = 1.0


class VideoEncoder:
    """One encoder for one geometry; its packets carry time base 1/fps and pts = frame slots.

    The encoder lives in a container-less holder stream so that recordings (and the pre-record
    ring) can outlive each other while the encoder keeps running; each recording copies the
    stream parameters and the global header (SPS/PPS) from `template`.
    """

    def __init__(self, fmt: RecordingFormat, settings: EncoderSettings, info: StreamInfo) -> None:
        self.width, self.height, self.fps = target_geometry(
            fmt.mode, info.width, info.height, info.fps
        )
        self._holder = av.open(io.BytesIO(), "w", format=fmt.container)
        codec, options = self._codec_and_options(fmt, settings)
        stream: Any = self._holder.add_stream(codec, rate=self.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        ctx = stream.codec_context
        ctx.time_base = 1 / self.fps
        ctx.gop_size = max(1, round(float(self.fps) * settings.gop_s))
        ctx.thread_count = settings.threads
        if fmt.mode != "h264":
            # MP@ML allows 15 Mbit/s (ISO 13818-2 Table 8-13); MP@HL 80 Mbit/s.
            ctx.bit_rate = 8_000_000 if fmt.mode == "mpeg2-ml" else 25_000_000
            ctx.max_b_frames = 0
        # Open now: the global header (SPS/PPS) exists from here on, before the first packet.
        ctx.open()
        self.template = stream
        self.codec = fmt.codec
        self.mode = fmt.mode

    @staticmethod
    def _codec_and_options(fmt: RecordingFormat, s: EncoderSettings) -> tuple[str, dict[str, str]]:
        if fmt.mode == "mpeg2-ml":
            return "mpeg2video", {"maxrate": "15000000", "bufsize": "1835008"}
        if fmt.mode == "mpeg2-hl":
            return "mpeg2video", {"maxrate": "80000000", "bufsize": "9781248"}
        options = {"profile": "high", "level": "4.1"}
        if s.encoder == "libx264":
            options |= {"preset": s.preset, "crf": str(s.crf)}
            if s.tune:
                options["tune"] = s.tune
            if s.x264_params:
                options["x264-params"] = s.x264_params
        return s.encoder, options

    def encode(self, frame: av.VideoFrame | None, pts: int | None = None) -> list[Any]:
        """Encode one frame at frame slot `pts` (None flushes the encoder)."""
        ctx = self.template.codec_context
        if frame is None:
            return list(ctx.encode(None))
        if (frame.width, frame.height, frame.format.name) != (self.width, self.height, "yuv420p"):
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        frame.pts = pts
        frame.time_base = ctx.time_base
        return list(ctx.encode(frame))


class SlotClock:
    """Frame slots (pts in units of 1/fps) for the encoder.

    The source's own timestamps give the slots where it has them (jitter-free, and a late
    burst after a scheduling hiccup keeps its spacing); arrival time otherwise (V4L2 through
    OpenCV). After a jump in the source's clock (reopen, file loop, gap > 1 s) the slots
    re-anchor on arrival time, so a drop-out shows as a held frame of its real length. Frames
    that would land on an already used slot are skipped (the source is faster than the output).
    """

    def __init__(self, fps: Fraction, t0: float) -> None:
        self.fps = fps
        self.t0 = t0
        self.last = -1
        self._anchor: tuple[float, int] | None = None
        self._prev_media: float | None = None

    def slot(self, t: float, media_t: float | None) -> int | None:
        wall = round((t - self.t0) * self.fps)
        if media_t is None:
            pts = wall
            if pts <= self.last and self.last + 1 - (t - self.t0) * self.fps <= 2:
                pts = self.last + 1  # arrived early in a burst: next slot, clock permitting
        else:
            prev = self._prev_media
            if self._anchor is None or prev is None or not 0 <= media_t - prev <= 1.0:
                self._anchor = (media_t, max(self.last + 1, wall))
            self._prev_media = media_t
            pts = self._anchor[1] + round((media_t - self._anchor[0]) * self.fps)
        if pts <= self.last:
            return None
        self.last = pts
        return pts
