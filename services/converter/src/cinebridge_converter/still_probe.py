"""Probing a captured still (JPEG, PNG, BMP, TIFF, GIF) up to its frame header, within limits.

A JPEG's markers are walked up to its frame header (ITU-T T.81 B.2), nothing decoded, to tell
whether it can go into DICOM byte for byte; any other format is read by Pillow header-first.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import BadMedia


@dataclass(frozen=True)
class StillProbe:
    """A still image: its format and, for JPEG, whether it can go into DICOM byte for byte."""

    format: str  # "jpeg", "png", "bmp", ...
    width: int
    height: int
    components: int
    baseline: bool  # JPEG SOF0 (Process 1), 8-bit
    sampling: str | None  # "420", "422", "444", "other" for 3-component JPEG
    adobe_rgb: bool  # APP14 transform 0: components are RGB, not YCbCr


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def probe_still(path: Path, *, max_pixels: int) -> StillProbe:
    size = path.stat().st_size
    if size == 0:
        raise BadMedia("the snapshot is an empty file (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(2)
        if head == b"\xff\xd8":
            probe = _probe_jpeg(fh)
        else:
            probe = _probe_other(path)
    if probe.width <= 0 or probe.height <= 0:
        raise BadMedia("the snapshot declares no picture size")
    if probe.width * probe.height > max_pixels:
        raise BadMedia(
            f"snapshot {probe.width}x{probe.height} exceeds the limit of {max_pixels} pixels"
        )
    return probe


def _probe_jpeg(fh: object) -> StillProbe:
    """Walk JPEG markers up to the frame header (ITU-T T.81 B.2); nothing is decoded."""
    read = fh.read  # type: ignore[attr-defined]
    adobe_rgb = False
    while True:
        byte = read(1)
        if not byte:
            raise BadMedia("JPEG ends before its frame header (truncated)")
        if byte != b"\xff":
            continue
        marker = read(1)
        while marker == b"\xff":
            marker = read(1)
        if not marker:
            raise BadMedia("JPEG ends before its frame header (truncated)")
        code = marker[0]
        if code in (0x01, 0xD8) or 0xD0 <= code <= 0xD7:
            continue
        raw_len = read(2)
        if len(raw_len) < 2:
            raise BadMedia("JPEG segment truncated")
        length = struct.unpack(">H", raw_len)[0]
        body = read(length - 2)
        if len(body) < length - 2:
            raise BadMedia("JPEG segment truncated")
        if code == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
            adobe_rgb = body[11] == 0
        if code in _SOF_MARKERS:
            precision, height, width, ncomp = struct.unpack(">BHHB", body[:6])
            factors = [body[6 + 3 * i + 1] for i in range(ncomp)]
            return StillProbe(
                format="jpeg",
                width=width,
                height=height,
                components=ncomp,
                baseline=code == 0xC0 and precision == 8,
                sampling=_sampling(factors),
                adobe_rgb=adobe_rgb,
            )
        if code == 0xDA:
            raise BadMedia("JPEG has scan data before any frame header")


def _sampling(factors: list[int]) -> str | None:
    if len(factors) != 3:
        return None
    (h0, v0), rest = divmod(factors[0], 16), factors[1:]
    if any(f != 0x11 for f in rest):
        return "other"
    return {(2, 2): "420", (2, 1): "422", (1, 1): "444"}.get((h0, v0), "other")


def _probe_other(path: Path) -> StillProbe:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:  # lazy: reads the header only
            width, height = img.size
            fmt = (img.format or "unknown").lower()
            bands = len(img.getbands())
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise BadMedia(f"not an image file Pillow can read ({type(exc).__name__})") from exc
    return StillProbe(
        format=fmt,
        width=width,
        height=height,
        components=bands,
        baseline=False,
        sampling=None,
        adobe_rgb=False,
    )
