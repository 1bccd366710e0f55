"""One media item to DICOM instances, in two synchronous steps around the number allocation.

`prepare` (worker thread): verify, probe, transcode/remux into conforming bit streams;
the caller then reserves series and instance numbers in the database; `write` (worker thread)
builds each data set and writes each Part 10 file to a temporary name in the store, fsync'd.
Nothing here touches NATS or PostgreSQL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
from av.codec.codec import UnknownCodecError
from cinebridge_common.store import MediaStore, sha256_file
from cinebridge_common.uids import make_uid
from pydicom.dataset import Dataset

from . import probe as probing
from . import rules, stills, video
from .dicomize import Identity, Pixels, Station, build_dataset, sop_class_for, still_pixels
from .errors import RESOURCE_ERRNOS, BadMedia, Cancelled, ConversionError, TransientFailure
from .part10 import write_encapsulated
from .timestamps import TimestampError
from .verify import Unplayable, check_playable

Progress = Callable[[float, str], None]
_T = TypeVar("_T")
#: The write of a source kept as it is runs here while the calling thread decode-checks it,
#: and the SHA-256 check of a source while it is remuxed or transcoded. (This way round the
#: decoder allocates in the caller's malloc arena, as it did before the two ran side by side:
#: a decoder in a new thread's arena added ~30 MB of peak RSS.)
_COPIES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="part10-copy")
LOSSY_METHOD = {
    rules.MPEG2_MPML: "ISO_13818_2",
    rules.MPEG2_MPHL: "ISO_13818_2",
    rules.H264_HP41: "ISO_14496_10",
    rules.H264_BD: "ISO_14496_10",
}


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 8192 * 8192
    max_duration_s: float = 12 * 3600
    max_fragment_bytes: int = 0xFFFFFFFE
    transcode_seconds_per_second: float = 4.0  # transcode time limit = this x duration + 60 s
    preset: str = "veryfast"


@dataclass(frozen=True)
class MediaInfo:
    id: str
    kind: str  # snapshot | recording
    path: Path
    sha256: str
    source: str
    captured_at: dt.datetime


class NotAsCoded(Exception):
    """The source kept as it is failed the decode check that ran beside its write."""


@dataclass
class Prepared:
    """Conforming bit streams ready to encapsulate (one per instance)."""

    streams: list[Path]
    pixels: list[Pixels]
    verbatim: bool  # the source itself is the stream (its hash is checked while copying)
    temporaries: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The decode check (stream, frames) of a source kept as it is: `write` runs it while it
    #: copies the stream (the check is decoding, the copy I/O and hashing: side by side the as-is
    #: path costs about the longer of the two, not their sum).
    deferred_check: tuple[Path, int, probing.CountedPass | None] | None = None
    #: Prepares again with a re-encode (the reason given) when the deferred check fails.
    redo: Callable[[str], Prepared] | None = None

    def adopt(self, other: Prepared) -> None:
        """Take `other`'s streams in place (the caller's reference sees the re-encode)."""
        self.cleanup()
        self.streams, self.pixels, self.verbatim = other.streams, other.pixels, other.verbatim
        self.temporaries, self.notes = other.temporaries, other.notes
        self.deferred_check, self.redo = other.deferred_check, None

    def cleanup(self) -> None:
        for path in self.temporaries:
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Built:
    part: int
    sop_instance_uid: str
    sop_class_uid: str
    ts_uid: str
    temp: Path
    size: int
    sha256: str
    rows: int
    columns: int
    frames: int | None


def sop_uid(media_id: str, study_uid: str, ts_uid: str, iod: str, part: int, root: str) -> str:
    """Same media, study and options -> same UID (a redelivered job makes the same instance)."""
    return make_uid("sop", media_id, study_uid, ts_uid, iod, str(part), root=root)


def series_uid(study_uid: str, source: str, root: str) -> str:
    return make_uid("series", study_uid, source, root=root)


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


def classify(exc: BaseException) -> ConversionError | TransientFailure:
    """Only a lack of resources (disk, memory, file handles) is worth a retry; anything else
    that FFmpeg or the file system says about the input is final. Never names a file path."""
    number = getattr(exc, "errno", None)
    cause = getattr(exc, "strerror", None) or type(exc).__name__
    if number in RESOURCE_ERRNOS:
        return TransientFailure(f"out of resources: {cause}")
    if isinstance(exc, UnknownCodecError):
        return BadMedia(f"the recording uses a codec FFmpeg cannot decode: {exc}")
    return BadMedia(f"the media cannot be converted: {cause}")


def _verify(media: MediaInfo) -> None:
    if sha256_file(media.path) != media.sha256:
        raise BadMedia("the media file does not match its recorded SHA-256 (changed or corrupt)")


def _verified_while(media: MediaInfo, work: Callable[[], _T]) -> _T:
    """`work()` (a remux or transcode of the source) while another thread checks the source
    against its SHA-256: the hash is a pass over the file that needs no result of the work, and
    hashlib releases the GIL, so the two overlap instead of adding up. Nothing made from a
    source that fails the check is returned; that failure wins over the work's own."""
    verifying = _COPIES.submit(_verify, media)
    try:
        result = work()
    except BaseException:
        verifying.result()  # a changed or corrupt source is the reason to report
        raise
    verifying.result()
    return result


def _prepare_still(media: MediaInfo, store: MediaStore, limits: Limits) -> Prepared:
    info = probing.probe_still(media.path, max_pixels=limits.max_pixels)
    plan = stills.plan_still(info)
    if not plan.reencode:
        size = media.path.stat().st_size
        return Prepared([media.path], [still_pixels(info.height, info.width, size, None)], True)
    _verify(media)
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
            stream, derivation = _verified_while(
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
        segments = _verified_while(media, remux) if stream == media.path else remux()
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


def write(
    prepared: Prepared,
    media: MediaInfo,
    study: Dataset,
    station: Station,
    numbers: tuple[int, int],
    store: MediaStore,
    root: str,
    progress: Progress,
) -> list[Built]:
    """Write every instance to an fsync'd temporary file; the caller commits or deletes them.
    A source kept as it is that fails its decode check is re-encoded here (`prepared` then
    describes the re-encode) and written again under the same numbers."""
    args = (media, study, station, numbers, store, root, progress)
    try:
        return _write_checked(prepared, *args)
    except NotAsCoded as exc:
        if prepared.redo is None:
            raise BadMedia(str(exc)) from exc
        redone = prepared.redo(str(exc))
        if len(redone.streams) != len(prepared.streams):
            redone.cleanup()
            raise BadMedia(f"{exc}; re-encoded it needs {len(redone.streams)} instances") from exc
        prepared.adopt(redone)
        return _write_checked(prepared, *args)


def _write_checked(prepared: Prepared, *args: Any) -> list[Built]:
    """`_write_all`, with the deferred decode check in this thread while another copies."""
    check, prepared.deferred_check = prepared.deferred_check, None
    if check is None:
        return _write_all(prepared, *args)
    copying = _COPIES.submit(_write_all, prepared, *args)
    try:
        check_playable(*check)
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            for item in copying.result():
                item.temp.unlink(missing_ok=True)
        if isinstance(exc, (TimestampError, Unplayable)):
            raise NotAsCoded(f"not playable as coded: {exc}") from exc
        if isinstance(exc, (av.error.FFmpegError, OSError)):
            raise classify(exc) from exc  # as when the check ran in `prepare`
        raise
    return copying.result()


def _write_all(
    prepared: Prepared,
    media: MediaInfo,
    study: Dataset,
    station: Station,
    numbers: tuple[int, int],
    store: MediaStore,
    root: str,
    progress: Progress,
) -> list[Built]:
    series_number, first_instance = numbers
    study_uid = str(study.StudyInstanceUID)
    uids = [
        sop_uid(media.id, study_uid, p.ts_uid, station.iod, i + 1, root)
        for i, p in enumerate(prepared.pixels)
    ]
    built: list[Built] = []
    try:
        for index, (stream, pixels) in enumerate(
            zip(prepared.streams, prepared.pixels, strict=True)
        ):
            ident = Identity(
                sop_instance_uid=uids[index],
                series_instance_uid=series_uid(study_uid, media.source, root),
                series_number=series_number,
                instance_number=first_instance + index,
                series_description=media.source,
                content_time=media.captured_at.astimezone(),
                created=dt.datetime.now().astimezone(),
                part=(index + 1, len(uids)),
            )
            ds = build_dataset(study, pixels, ident, station)
            built.append(
                _write_one(
                    ds,
                    stream,
                    pixels,
                    index + 1,
                    prepared,
                    media,
                    store,
                    functools.partial(_part_progress, progress, index, len(uids)),
                )
            )
    except BaseException:
        for item in built:
            item.temp.unlink(missing_ok=True)
        raise
    return built


def _part_progress(progress: Progress, index: int, count: int, fraction: float) -> None:
    progress((index + fraction) / count, "write")


def _write_one(
    ds: Dataset,
    stream: Path,
    pixels: Pixels,
    part: int,
    prepared: Prepared,
    media: MediaInfo,
    store: MediaStore,
    progress: Callable[[float], None],
) -> Built:
    tmp = store.temp_path(".dcm")
    try:
        with open(tmp, "xb") as out:
            written = write_encapsulated(
                out, ds, stream, progress=progress, hash_source=prepared.verbatim
            )
            out.flush()
            os.fsync(out.fileno())
        if prepared.verbatim and written.source_sha256 != media.sha256:
            raise BadMedia(
                "the media file does not match its recorded SHA-256 (changed or corrupt)"
            )
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return Built(
        part,
        str(ds.SOPInstanceUID),
        str(ds.SOPClassUID),
        pixels.ts_uid,
        tmp,
        written.size,
        written.sha256,
        pixels.rows,
        pixels.columns,
        pixels.frames,
    )


def final_relative(sop_instance_uid: str, when: dt.datetime) -> str:
    """A store path built from a hash of the UID (never the UID itself): same UID, same path."""
    name = hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:32]
    return f"dicom/{when:%Y/%m/%d}/{name}.dcm"


def sop_class(iod: str, kind: str) -> str:
    return sop_class_for(iod, video=kind == "recording")
