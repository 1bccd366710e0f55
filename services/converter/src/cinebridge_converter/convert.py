"""One media item to DICOM instances, in two synchronous steps around the number allocation.

`prepare` (worker thread, this module): verify, probe, transcode/remux into conforming bit
streams; the caller then reserves series and instance numbers in the database; `write` (worker
thread, `instance_write.py`) builds each data set and writes each Part 10 file to a temporary
name in the store, fsync'd. What both share is in `conversion.py`; the names callers use are
all here. Nothing here touches NATS or PostgreSQL.
"""

from __future__ import annotations

import functools
import threading
from fractions import Fraction
from pathlib import Path

import av
from av.codec.codec import UnknownCodecError
from cinebridge_common.store import MediaStore

from . import probe as probing
from . import rules, stills, video
from .conversion import (
    Limits,
    MediaInfo,
    Prepared,
    Progress,
    classify,
    verified_while,
    verify,
)
from .dicomize import Pixels, sop_class_for, still_pixels
from .errors import BadMedia, Cancelled, ConversionError, TransientFailure
from .instance_write import Built, final_relative, series_uid, sop_uid, write
from .timestamps import TimestampError
from .verify import Unplayable, check_playable

__all__ = [
    "Built",
    "Limits",
    "MediaInfo",
    "Prepared",
    "Progress",
    "classify",
    "final_relative",
    "prepare",
    "series_uid",
    "sop_class",
    "sop_uid",
    "write",
]

LOSSY_METHOD = {
    rules.MPEG2_MPML: "ISO_13818_2",
    rules.MPEG2_MPHL: "ISO_13818_2",
    rules.H264_HP41: "ISO_14496_10",
    rules.H264_BD: "ISO_14496_10",
}


def prepare(
    media: MediaInfo,
    ts_uid: str,
    store: MediaStore,
    limits: Limits,
    progress: Progress,
    cancel: threading.Event,
    reencode: str | None = None,
) -> Prepared:
    """Probe, then keep, remux or transcode (always transcode with a `reencode` reason);
    errors say whether retrying can help (`classify`)."""
    try:
        if not media.path.is_file():
            raise BadMedia("the media file is missing from the media store")
        if media.kind == "snapshot":
            return _prepare_still(media, store, limits)
        prepared = _prepare_video(media, ts_uid, store, limits, progress, cancel, reencode)
        prepared.redo = functools.partial(prepare, media, ts_uid, store, limits, progress, cancel)
        return prepared
    except (ConversionError, TransientFailure, Cancelled):
        raise
    except (av.error.FFmpegError, OSError, UnknownCodecError) as exc:
        raise classify(exc) from exc


def _prepare_still(media: MediaInfo, store: MediaStore, limits: Limits) -> Prepared:
    info = probing.probe_still(media.path, max_pixels=limits.max_pixels)
    plan = stills.plan_still(info)
    if not plan.reencode:
        size = media.path.stat().st_size
        return Prepared([media.path], [still_pixels(info.height, info.width, size, None)], True)
    verify(media)
    tmp = store.temp_path(".jpg")
    width, height = stills.reencode(media.path, tmp, max_pixels=limits.max_pixels)
    pixels = still_pixels(height, width, tmp.stat().st_size, plan.reason)
    return Prepared([tmp], [pixels], False, temporaries=[tmp], notes=[plan.reason or ""])


def _prepare_video(
    media: MediaInfo,
    ts_uid: str,
    store: MediaStore,
    limits: Limits,
    progress: Progress,
    cancel: threading.Event,
    reencode: str | None = None,
) -> Prepared:
    found = _probe(media.path, limits)
    prepared = Prepared([], [], False)
    derivation = None
    try:
        segments: list[video.Segment] | None = None
        reasons = rules.misfits(found, ts_uid) or ([reencode] if reencode else [])
        if not reasons:
            try:
                segments = _keep_coding(
                    media, media.path, found, ts_uid, store, limits, prepared, progress, cancel
                )
            except (TimestampError, Unplayable) as exc:
                # Kept as coded it would not play as stated: re-encode instead.
                reasons = [f"not playable as coded: {exc}"]
                prepared.cleanup()
                prepared.verbatim = False
        if segments is None:
            stream, derivation = verified_while(
                media,
                functools.partial(
                    _transcode,
                    media,
                    found,
                    reasons,
                    ts_uid,
                    store,
                    limits,
                    prepared,
                    progress,
                    cancel,
                ),
            )
            found = _probe(stream, limits)
            try:
                segments = _keep_coding(
                    media, stream, found, ts_uid, store, limits, prepared, progress, cancel
                )
            except (TimestampError, Unplayable) as exc:
                raise BadMedia(f"the re-encoded recording does not play: {exc}") from exc
    except BaseException:
        prepared.cleanup()
        raise
    rate = rules.standard_rate(found.rate) or found.rate
    for segment in segments:
        prepared.streams.append(segment.path)
        prepared.pixels.append(_video_pixels(found, segment, ts_uid, rate, derivation))
    return prepared


def _probe(path: Path, limits: Limits) -> probing.VideoProbe:
    return probing.probe_video(
        path, max_pixels=limits.max_pixels, max_duration_s=limits.max_duration_s
    )


def _keep_coding(
    media: MediaInfo,
    stream: Path,
    found: probing.VideoProbe,
    ts_uid: str,
    store: MediaStore,
    limits: Limits,
    prepared: Prepared,
    progress: Progress,
    cancel: threading.Event,
) -> list[video.Segment]:
    """The stream as it is, or remuxed; each result checked to play with its frame count."""
    container = rules.container_for(ts_uid)
    if _needs_remux(found, ts_uid, container, limits):
        remux = functools.partial(
            video.remux,
            stream,
            ts_uid=ts_uid,
            container=container,
            new_path=lambda: _temp(store, container, prepared),
            max_bytes=limits.max_fragment_bytes,
            progress=progress,
            cancel=cancel,
        )
        segments = verified_while(media, remux) if stream == media.path else remux()
    else:
        segments = [video.Segment(stream, found.frames, found.duration_s)]
        prepared.verbatim = stream == media.path
        if prepared.verbatim:
            prepared.deferred_check = (stream, found.frames, found.counted)
            return segments
    for segment in segments:
        check_playable(segment.path, segment.frames)
    return segments


def _transcode(
    media: MediaInfo,
    found: probing.VideoProbe,
    reasons: list[str],
    ts_uid: str,
    store: MediaStore,
    limits: Limits,
    prepared: Prepared,
    progress: Progress,
    cancel: threading.Event,
) -> tuple[Path, str]:
    """Re-encode to a compliant stream; returns it and the Derivation Description."""
    target = rules.encode_target(found, ts_uid, limits.preset)
    stream = store.temp_path(".mp4" if target.container == "mp4" else ".ts")
    prepared.temporaries.append(stream)
    video.transcode(
        media.path,
        target,
        stream,
        fields=_fields(found, target),
        rotation=found.rotation,
        progress=progress,
        cancel=cancel,
        timeout_s=60 + limits.transcode_seconds_per_second * found.duration_s,
    )
    aspect = "" if found.sar == 1 else f" with {found.sar.numerator}:{found.sar.denominator} pixels"
    return stream, (
        f"Transcoded by CineBridge from {found.codec} {found.width}x{found.height}{aspect}"
        f" at {float(found.rate):.3f} fps ({'; '.join(reasons)})"
    )


def _fields(found: probing.VideoProbe, target: rules.EncodeTarget) -> str:
    """What a transcode does with an interlaced source (converter README, "Timing")."""
    if not found.interlaced:
        return "progressive"
    if rules.interlaced_target(found, target):
        return "tff" if found.top_field_first else "bff"
    return "field" if float(target.rate) > float(found.rate) * 1.5 else "frame"


def _temp(store: MediaStore, container: str, prepared: Prepared) -> Path:
    path = store.temp_path(".mp4" if container == "mp4" else ".ts")
    prepared.temporaries.append(path)
    return path


def _needs_remux(found: probing.VideoProbe, ts_uid: str, container: str, limits: Limits) -> bool:
    return (
        not rules.container_ok(found, ts_uid)
        or found.other_streams > 0
        or found.truncated
        or any(not rules.audio_allowed(a, ts_uid, found.container) for a in found.audio_codecs)
        or found.size > limits.max_fragment_bytes
    )


def _video_pixels(
    found: probing.VideoProbe,
    segment: video.Segment,
    ts_uid: str,
    rate: Fraction,
    derivation: str | None,
) -> Pixels:
    raw = found.width * found.height * 1.5 * segment.frames  # 4:2:0, 8 bits
    size = max(1, segment.path.stat().st_size)
    return Pixels(
        ts_uid=ts_uid,
        rows=found.height,
        columns=found.width,
        photometric="YBR_PARTIAL_420",
        frames=segment.frames,
        rate=rate,
        lossy_method=LOSSY_METHOD[ts_uid],
        lossy_ratio=raw / size,
        derivation=derivation,
        pixel_aspect=None if found.sar == 1 else (found.sar.denominator, found.sar.numerator),
    )


def sop_class(iod: str, kind: str) -> str:
    return sop_class_for(iod, video=kind == "recording")
