"""Recordings to MP4 (H.264, moov first: "+faststart") and snapshots to JPEG for an export,
with an optional caption burned into the picture (PyAV decode → Pillow → libx264).

A recording without a caption is remuxed (packets copied, nothing re-encoded) when its video is
H.264 already, the capture service's default; anything else, or a burned-in caption, is
encoded with libx264. Runs in a worker thread and stops at the next frame when `cancel` is set.
"""

from __future__ import annotations

import shutil
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import BadMedia, Cancelled
from .probe import open_input
from .video import _ffmpeg_failure

#: "+faststart": the moov box before the media data, so a player or a browser starts at once.
MP4_OPTIONS = {"movflags": "+faststart"}
CAPTION_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def export_recording(
    src: Path, dest: Path, *, caption: str | None, preset: str, cancel: threading.Event
) -> None:
    """Write `src` to `dest` as MP4 with H.264 video (and the source's AAC audio when copied)."""
    try:
        with open_input(src) as inp:
            codec = inp.streams.video[0].codec_context.name
        if caption is None and codec == "h264":
            _remux(src, dest, cancel)
        else:
            _encode(src, dest, caption, preset, cancel)
    except av.error.FFmpegError as exc:
        dest.unlink(missing_ok=True)
        raise _ffmpeg_failure(exc, "the recording cannot be exported") from exc
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _remux(src: Path, dest: Path, cancel: threading.Event) -> None:
    with open_input(src) as inp, av.open(str(dest), "w", format="mp4", options=MP4_OPTIONS) as out:
        video = inp.streams.video[0]
        audio = [s for s in inp.streams.audio if s.codec_context.name == "aac"][:1]
        mapping: dict[Any, Any] = {s: out.add_stream_from_template(s) for s in (video, *audio)}
        for packet in inp.demux(list(mapping)):
            if cancel.is_set():
                raise Cancelled()
            if packet.dts is None or packet.size == 0:
                continue  # flush packets
            packet.stream = mapping[packet.stream]
            out.mux(packet)


def _encode(
    src: Path, dest: Path, caption: str | None, preset: str, cancel: threading.Event
) -> None:
    frames = 0
    with open_input(src) as inp, av.open(str(dest), "w", format="mp4", options=MP4_OPTIONS) as out:
        video = inp.streams.video[0]
        video.thread_type = "AUTO"
        ctx = video.codec_context
        rate = video.average_rate or Fraction(25)
        enc: Any = out.add_stream("libx264", rate=rate, options={"preset": preset, "crf": "20"})
        # yuv420p needs even sizes (H.264 4:2:0 macroblocks).
        enc.width, enc.height, enc.pix_fmt = ctx.width // 2 * 2, ctx.height // 2 * 2, "yuv420p"
        enc.codec_context.time_base = Fraction(1) / rate
        font = caption_font(ctx.height)
        for frame in inp.decode(video):
            if cancel.is_set():
                raise Cancelled()
            picture = Image.fromarray(frame.to_ndarray(format="rgb24"))
            if caption is not None:
                draw_caption(picture, caption, font)
            if picture.size != (enc.width, enc.height):
                picture = picture.crop((0, 0, enc.width, enc.height))
            rgb = av.VideoFrame.from_ndarray(np.asarray(picture), format="rgb24")
            out_frame = rgb.reformat(format="yuv420p")
            out_frame.pts = frames
            out_frame.time_base = enc.codec_context.time_base
            for packet in enc.encode(out_frame):
                out.mux(packet)
            frames += 1
        for packet in enc.encode(None):
            out.mux(packet)
    if frames == 0:
        raise BadMedia("no frame of the recording could be decoded")


def export_still(src: Path, dest: Path, *, caption: str | None) -> None:
    """A JPEG snapshot is copied as is; a caption, or another format, is encoded as JPEG."""
    with Image.open(src) as image:
        if caption is None and image.format == "JPEG":
            shutil.copyfile(src, dest)
            return
        picture = image.convert("RGB")
    if caption is not None:
        draw_caption(picture, caption, caption_font(picture.height))
    picture.save(dest, "JPEG", quality=92)


def caption_font(height: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    size = max(12, height // 24)
    try:
        return ImageFont.truetype(CAPTION_FONT, size)
    except OSError:
        return ImageFont.load_default(size)


def draw_caption(
    picture: Image.Image, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont
) -> None:
    """White text on a dark band at the bottom left, readable on any picture."""
    draw = ImageDraw.Draw(picture)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 4)
    y = picture.height - (bottom - top) - 3 * pad
    draw.rectangle((0, y, right - left + 2 * pad, picture.height), fill=(0, 0, 0))
    draw.text((pad - left, y + pad - top), text, fill=(255, 255, 255), font=font)
