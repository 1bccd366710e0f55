"""The second step of a conversion: each prepared bit stream into a DICOM instance, a Part 10
file written to a temporary name in the media store and fsync'd; the caller commits or deletes
them. UIDs are derived from the job, so a redelivered job writes the same instances.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import av
from cinebridge_common.store import MediaStore
from cinebridge_common.uids import make_uid
from pydicom.dataset import Dataset

from .conversion import COPIES, MediaInfo, NotAsCoded, Prepared, Progress, classify
from .dicomize import Identity, Pixels, Station, build_dataset
from .errors import BadMedia
from .part10 import write_encapsulated
from .timestamps import TimestampError
from .verify import Unplayable, check_playable


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
    target = _Target(media, study, station, numbers, store, root, progress)
    try:
        return _write_checked(prepared, target)
    except NotAsCoded as exc:
        if prepared.redo is None:
            raise BadMedia(str(exc)) from exc
        redone = prepared.redo(str(exc))
        if len(redone.streams) != len(prepared.streams):
            redone.cleanup()
            raise BadMedia(f"{exc}; re-encoded it needs {len(redone.streams)} instances") from exc
        prepared.adopt(redone)
        return _write_checked(prepared, target)


class _Target(NamedTuple):
    """Where and as what `write` puts the instances of one media item."""

    media: MediaInfo
    study: Dataset
    station: Station
    numbers: tuple[int, int]  # series number, first instance number
    store: MediaStore
    root: str
    progress: Progress


def _write_checked(prepared: Prepared, target: _Target) -> list[Built]:
    """`_write_all`, with the deferred decode check in this thread while another copies."""
    check, prepared.deferred_check = prepared.deferred_check, None
    if check is None:
        return _write_all(prepared, target)
    copying = COPIES.submit(_write_all, prepared, target)
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


def _write_all(prepared: Prepared, target: _Target) -> list[Built]:
    media, study, station, (series_number, first_instance), store, root, progress = target
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
            # The data and what reading it back needs (size, blocks); the caller's rename and
            # directory fsync make the name durable. Its times are not worth a second journal
            # write.
            os.fdatasync(out.fileno())
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
