"""Test-pattern media made with PyAV and Pillow, for tests, benchmarks and demos (no binaries)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from PIL import Image


def pattern(width: int, height: int, index: int) -> np.ndarray:
    """A moving bar over a colour gradient: cheap to make, non-trivial to encode."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:, :, 0] = (np.arange(width, dtype=np.uint32) * 255 // max(1, width - 1)).astype(np.uint8)
    frame[:, :, 1] = (index * 7) % 256
    frame[:, :, 2] = (
        np.arange(height, dtype=np.uint32)[:, None] * 255 // max(1, height - 1)
    ).astype(np.uint8)
    x = (index * 16) % max(1, width - 64)
    frame[height // 3 : height // 2, x : x + 64] = 255
    return frame


def make_video(
    path: Path,
    *,
    codec: str = "libx264",
    width: int = 320,
    height: int = 240,
    rate: Fraction | int = 25,
    frames: int = 25,
    container: str | None = None,
    options: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
    interlaced: bool = False,
    audio: str | None = None,
    container_options: dict[str, str] | None = None,
    sar: Fraction | None = None,
) -> Path:
    """Encode `frames` pattern frames; `interlaced` flags them top field first (setfield)."""
    rate = Fraction(rate)
    with av.open(str(path), "w", format=container, options=container_options or {}) as out:
        stream = cast(
            av.video.stream.VideoStream, out.add_stream(codec, rate=rate, options=options or {})
        )
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        sound = (
            cast(av.audio.stream.AudioStream, out.add_stream(audio, rate=48000)) if audio else None
        )
        fields = _field_filter(width, height, rate) if interlaced else None
        samples = 0
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(width, height, index), format="rgb24")
            frame = frame.reformat(format=pix_fmt)
            frame.pts = index
            frame.time_base = 1 / rate
            if fields is not None:
                fields.push(frame)
                frame = cast(av.VideoFrame, fields.pull())
            for packet in stream.encode(frame):
                out.mux(packet)
            if sound is not None:
                samples = _audio(out, sound, samples, (index + 1) / float(rate))
        for packet in stream.encode(None):
            out.mux(packet)
        if sound is not None:
            for packet in sound.encode(None):
                out.mux(packet)
    return path


def _field_filter(width: int, height: int, rate: Fraction) -> av.filter.Graph:
    graph = av.filter.Graph()
    yuv = av.VideoFormat("yuv420p")
    src = graph.add_buffer(width=width, height=height, format=yuv, time_base=1 / rate)
    setfield, sink = graph.add("setfield", "tff"), graph.add("buffersink")
    src.link_to(setfield)
    setfield.link_to(sink)
    graph.configure()
    return graph


def _audio(
    out: av.container.OutputContainer,
    sound: av.audio.stream.AudioStream,
    done: int,
    until_s: float,
) -> int:
    size = sound.codec_context.frame_size or 1024
    while done < until_s * 48000:
        frame = av.AudioFrame(format=sound.codec_context.format.name, layout="stereo", samples=size)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = 48000
        frame.pts = done
        for packet in sound.encode(frame):
            out.mux(packet)
        done += size
    return done


def make_still(
    path: Path,
    *,
    width: int = 640,
    height: int = 480,
    fmt: str = "JPEG",
    subsampling: int = 2,
    progressive: bool = False,
) -> Path:
    """A snapshot; JPEG subsampling 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0 (Pillow's numbering)."""
    image = Image.fromarray(pattern(width, height, 3))
    if fmt == "JPEG":
        image.save(path, "JPEG", quality=90, subsampling=subsampling, progressive=progressive)
    else:
        image.save(path, fmt)
    return path


def huge_jpeg_header(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A small file whose JPEG frame header declares a huge picture (a decompression bomb)."""
    image = Image.fromarray(pattern(64, 64, 0))
    image.save(path, "JPEG", quality=80)
    data = bytearray(path.read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path
