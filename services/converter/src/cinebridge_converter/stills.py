"""Snapshots to JPEG Baseline (PS3.5 A.4.1, 1.2.840.10008.1.2.4.50) without re-encoding if we can.

A captured JPEG that is already baseline 8-bit YCbCr with 4:2:0 or 4:2:2 chroma goes into the
fragment byte for byte (Photometric YBR_FULL_422, PS3.3 C.7.6.3.1.2). Anything else —
progressive, 4:4:4, greyscale, Adobe RGB or CMYK JPEG, PNG (16-bit, with alpha), BMP, TIFF, GIF
(its first frame) — is decoded once and re-encoded as baseline 4:2:2, and the instance says so
(Derivation Description). 16-bit greyscale is scaled to 8 bits; transparent parts show black.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import BadMedia
from .still_probe import StillProbe

QUALITY = 95


@dataclass(frozen=True)
class StillPlan:
    reencode: bool
    reason: str | None


def plan_still(probe: StillProbe) -> StillPlan:
    if probe.format != "jpeg":
        return StillPlan(True, f"re-encoded from {probe.format.upper()} to JPEG baseline 4:2:2")
    problems = []
    if not probe.baseline:
        problems.append("not baseline 8-bit")
    if probe.components != 3:
        problems.append(f"{probe.components} component(s)")
    elif probe.sampling not in ("420", "422"):
        problems.append(f"chroma sampling {probe.sampling}")
    if probe.adobe_rgb:
        problems.append("RGB (not YCbCr) components")
    if not problems:
        return StillPlan(False, None)
    return StillPlan(
        True, "re-encoded to JPEG baseline 4:2:2 from a JPEG that was " + ", ".join(problems)
    )


def reencode(src: Path, dest: Path, *, max_pixels: int) -> tuple[int, int]:
    """Decode `src` and write a baseline 4:2:2 JPEG to `dest`; returns (width, height)."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with Image.open(src) as img:
            img.load()  # an animated image (GIF, APNG): its first frame
            rgb = _rgb(img)
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise BadMedia(f"the snapshot cannot be decoded: {exc}") from exc
    # subsampling=1 is 4:2:2 in Pillow; progressive/optimize off keeps it Process 1 (SOF0).
    rgb.save(dest, "JPEG", quality=QUALITY, subsampling=1, progressive=False, optimize=False)
    return rgb.size


def _rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB as the picture is seen: deep greyscale scaled to 8 bits (Pillow would clip it
    to white), transparency shown over black."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        return Image.fromarray(
            np.clip(values * 255.0 / top + 0.5, 0, 255).astype(np.uint8)
        ).convert("RGB")
    if "A" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert(
            "RGB"
        )
    return img.convert("RGB")
