"""An externally recorded video or image, streamed into the media store and probed by content.

The body goes to a temporary file on the store's file system while its size and SHA-256 are
counted (never whole in memory); past the size limit the file is removed. What the file is comes
from FFmpeg's probing with a demuxer whitelist (the converter's, plus the still-image demuxers),
never from its name: a still becomes a `snapshot`, a video a `recording`, anything else is
refused. The media row and its MediaCaptured event are those capture writes, so the converter
takes an upload exactly like a capture (services/gateway/README.md, "Add file").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av
from cinebridge_common.messages import MediaCaptured
from cinebridge_common.store import MediaStore

#: FFmpeg reads local files only, through these demuxers (a playlist posing as a video cannot
#: make it fetch URLs; the converter opens recordings with the same video list).
VIDEO_DEMUXERS = "mov,mpegts,mpeg,matroska,avi,mpegvideo,h264,hevc,mjpeg,mxf,gif"
STILL_DEMUXERS = "jpeg_pipe,png_pipe,bmp_pipe,tiff_pipe"
#: Store extension and MIME type by demuxer (the first name FFmpeg reports).
FORMATS = {
    "jpeg_pipe": ("jpg", "image/jpeg"),
    "png_pipe": ("png", "image/png"),
    "bmp_pipe": ("bmp", "image/bmp"),
    "tiff_pipe": ("tif", "image/tiff"),
    "mov": ("mp4", "video/mp4"),
    "mpegts": ("ts", "video/mp2t"),
    "mpeg": ("mpg", "video/mpeg"),
    "matroska": ("mkv", "video/x-matroska"),
    "avi": ("avi", "video/x-msvideo"),
    "mpegvideo": ("m2v", "video/mpeg"),
    "h264": ("h264", "video/h264"),
    "hevc": ("hevc", "video/h265"),
    "mjpeg": ("mjpeg", "video/x-motion-jpeg"),
    "mxf": ("mxf", "application/mxf"),
    "gif": ("gif", "image/gif"),  # a recording (animated), which the converter re-encodes
}
SOURCE = "upload"
#: Received bytes are written (and hashed) off the event loop in blocks of this size.
WRITE_BLOCK = 1 << 20


class TooLarge(Exception):
    """The body passed the size limit (the partial file is already gone)."""


class NotMedia(Exception):
    """FFmpeg finds no still image or video in the file."""


@dataclass(frozen=True)
class Probed:
    kind: str  # snapshot | recording
    ext: str
    mime: str
    width: int
    height: int
    codec: str
    frames: int | None
    duration_s: float | None
    fps: float | None


@dataclass(frozen=True)
class Received:
    temp: Path
    size: int
    sha256: str


async def receive(store: MediaStore, body: AsyncIterator[bytes], limit: int) -> Received:
    """Stream `body` into a temporary file of the store, fsync'd; deleted on any failure."""
    temp = store.temp_path(".upload")
    digest, size = hashlib.sha256(), 0
    pending = bytearray()
    out: BinaryIO = await asyncio.to_thread(open, temp, "xb")
    try:
        try:
            async for chunk in body:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the file is larger than {limit} bytes")
                pending += chunk
                if len(pending) >= WRITE_BLOCK:
                    await asyncio.to_thread(_write, out, digest, bytes(pending))
                    pending.clear()
            await asyncio.to_thread(_write, out, digest, bytes(pending))
            await asyncio.to_thread(os.fsync, out.fileno())
        finally:
            out.close()
        return Received(temp, size, digest.hexdigest())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


def _write(out: BinaryIO, digest: Any, block: bytes) -> None:
    digest.update(block)
    out.write(block)


def probe(path: Path) -> Probed:
    """What the file is, by FFmpeg's probing; NotMedia when it is neither image nor video."""
    for demuxers in (STILL_DEMUXERS, VIDEO_DEMUXERS):
        try:
            with av.open(
                str(path), options={"protocol_whitelist": "file", "format_whitelist": demuxers}
            ) as container:
                found = _described(container, still=demuxers == STILL_DEMUXERS)
        except (av.error.FFmpegError, OSError, ValueError):
            continue
        if found is not None:
            return found
    raise NotMedia("the file is not a video or an image that FFmpeg can read")


def _described(container: Any, *, still: bool) -> Probed | None:
    if not container.streams.video:
        return None
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if not ctx.width or not ctx.height:
        return None
    name = container.format.name.split(",")[0]
    if name not in FORMATS:
        return None
    ext, mime = FORMATS[name]
    if still:
        next(container.decode(stream))  # a header alone is not an image
        return Probed("snapshot", ext, mime, ctx.width, ctx.height, ctx.name, 1, None, None)
    duration = float(container.duration / av.time_base) if container.duration else None
    rate = float(stream.average_rate) if stream.average_rate else None
    return Probed(
        "recording",
        ext,
        mime,
        ctx.width,
        ctx.height,
        ctx.name,
        stream.frames or None,
        duration,
        rate,
    )


def media_event(
    store: MediaStore, received: Received, found: Probed, *, study_id: uuid.UUID, room: str
) -> MediaCaptured:
    """The MediaCaptured of an uploaded file, as capture announces a captured one, with a new
    name in the media store for it."""
    event = MediaCaptured(
        media_id=str(uuid.uuid4()),
        study_id=str(study_id),
        room=room,
        source=SOURCE,
        kind=found.kind,  # type: ignore[arg-type]
        rel_path=store.new_relative("media", found.ext),
        size=received.size,
        sha256=received.sha256,
        mime=found.mime,
        width=found.width,
        height=found.height,
        frames=found.frames,
        duration_s=found.duration_s,
        fps=found.fps,
        codec=found.codec,
    )
    return event
