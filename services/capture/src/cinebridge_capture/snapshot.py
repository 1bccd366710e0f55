"""Snapshot and preview images: baseline JPEG from a video frame (no NATS, no asyncio)."""

from __future__ import annotations

import av
import cv2


class SnapshotFailed(RuntimeError):
    """The frame could not be encoded as JPEG."""


def jpeg_from_frame(frame: av.VideoFrame, quality: int, max_width: int | None = None) -> bytes:
    """Baseline (sequential DCT, ITU T.81) JPEG of `frame`, scaled down to `max_width` if wider.

    Baseline rather than progressive: the converter embeds it unchanged as JPEG Baseline
    Process 1 (PS3.5 A.4.1, transfer syntax 1.2.840.10008.1.2.4.50).
    """
    width, height = frame.width, frame.height
    if max_width is not None and width > max_width:
        height = max(2, round(height * max_width / width) // 2 * 2)
        width = max_width
    image = frame.to_ndarray(width=width, height=height, format="bgr24")
    ok, data = cv2.imencode(
        ".jpg",
        image,
        [
            cv2.IMWRITE_JPEG_QUALITY,
            quality,
            cv2.IMWRITE_JPEG_PROGRESSIVE,
            0,
            cv2.IMWRITE_JPEG_OPTIMIZE,
            0,
        ],
    )
    if not ok:
        raise SnapshotFailed("JPEG encoding failed")
    return bytes(data.tobytes())
