"""The conversion of one media item as a job: load, convert in a thread, commit, announce."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

import asyncpg
from cinebridge_common.bus import Bus
from cinebridge_common.logging import kv
from cinebridge_common.messages import ConversionProgressed, ConvertMedia, InstanceCreated
from cinebridge_common.station import StationSettings, load_station_settings
from cinebridge_common.store import MediaStore
from pydicom.dataset import Dataset

from . import convert, metrics, mwl
from . import repository as repo
from .dicomize import IODS, Station, resolve_iod
from .errors import ConversionError
from .rules import JPEG_BASELINE, VIDEO_SYNTAXES
from .settings import ConverterSettings

log = logging.getLogger(__name__)


class MissingRows(Exception):
    """The media or study row is not (yet) there."""


@dataclass
class ConverterDeps:
    pool: asyncpg.Pool
    store: MediaStore
    bus: Bus
    settings: ConverterSettings
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Job:
    msg: ConvertMedia
    media: repo.MediaRow
    info: convert.MediaInfo
    study: mwl.StudyInfo
    station: Station
    ts_uid: str
    study_ds: Dataset


async def _rows(msg: ConvertMedia, deps: ConverterDeps) -> tuple[repo.MediaRow, mwl.StudyInfo]:
    media = await repo.load_media(deps.pool, msg.media_id)
    study = await repo.load_study(deps.pool, media["study_id"]) if media is not None else None
    if media is None or study is None:
        raise MissingRows(f"media {msg.media_id} or its study is not in the database")
    return media, study


async def load_job(msg: ConvertMedia, deps: ConverterDeps) -> Job:
    # The station's settings are read beside the rows (each on its own pooled connection): one
    # round trip less before a conversion starts. Read per job, so a change on the settings
    # page applies to the next conversion.
    (media, study), configured = await asyncio.gather(
        _rows(msg, deps), load_station_settings(deps.pool)
    )
    iod = msg.iod or configured.iod
    ts_uid = msg.video_transfer_syntax or configured.video_transfer_syntax
    info = convert.MediaInfo(
        id=str(media["id"]),
        kind=media["kind"],
        path=deps.store.resolve(media["rel_path"]),
        sha256=media["sha256"],
        source=media["source"],
        captured_at=media["captured_at"],
    )
    try:
        attributes = mwl.study_attributes(
            study,
            default_modality=deps.settings.converter_default_modality,
            uid_root=deps.settings.org_uid_root,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConversionError(f"the study's worklist item cannot be read: {exc}") from exc
    try:
        profile = resolve_iod(iod, attributes.get("Modality"))
    except ValueError as exc:
        raise ConversionError(str(exc)) from exc
    station = _station(configured, profile, deps.settings)
    return Job(msg, media, info, study, station, ts_uid, attributes)


def _station(configured: StationSettings, iod: str, settings: ConverterSettings) -> Station:
    return Station(
        station_name=configured.local_ae_title,
        character_set=configured.character_set,
        iod=iod,
        anatomic_region=settings.anatomic_region(),
    )


def _check_options(job: Job) -> None:
    if job.station.iod not in IODS:
        raise ConversionError(f"unknown IOD choice {job.station.iod!r}")
    if job.info.kind == "recording" and job.ts_uid not in VIDEO_SYNTAXES:
        raise ConversionError(
            f"video transfer syntax {job.ts_uid} is not supported "
            "(statement Table 10: .100, .101, .102, .103)"
        )


def first_uid(job: Job, root: str) -> str:
    return convert.sop_uid(
        job.info.id, str(job.study_ds.StudyInstanceUID), _ts(job), job.station.iod, 1, root
    )


def _ts(job: Job) -> str:
    return JPEG_BASELINE if job.info.kind == "snapshot" else job.ts_uid


async def run_conversion(job: Job, deps: ConverterDeps) -> list[InstanceCreated]:
    """Prepare and write in a worker thread, then commit files, rows and events."""
    _check_options(job)
    progress = _Progress(job, deps)
    limits, root = deps.settings.limits(), deps.settings.org_uid_root
    marks = [time.perf_counter()]
    prepared = await asyncio.to_thread(
        convert.prepare, job.info, job.ts_uid, deps.store, limits, progress, deps.cancel
    )
    marks.append(time.perf_counter())
    try:
        key = f"{job.study_ds.StudyInstanceUID}|{_ts(job)}|{job.station.iod}"
        numbers = await repo.reserve_numbers(
            deps.pool,
            job.info.id,
            job.media["study_id"],
            job.info.source,
            key,
            len(prepared.streams),
        )
        marks.append(time.perf_counter())
        built = await asyncio.to_thread(
            convert.write,
            prepared,
            job.info,
            job.study_ds,
            job.station,
            numbers,
            deps.store,
            root,
            progress,
        )
    finally:
        prepared.cleanup()
    marks.append(time.perf_counter())
    transcoded = bool(prepared.notes) or any(p.derivation for p in prepared.pixels)
    events = await _commit(job, deps, built, numbers, transcoded=transcoded)
    marks.append(time.perf_counter())
    metrics.record_path(job.info.kind, prepared.verbatim, transcoded)
    # Where a conversion's time goes (docs/benchmarks.md, bench/e2e.py's stages).
    steps = ("prepare_ms", "reserve_ms", "write_ms", "commit_ms")
    spent = {
        k: round((b - a) * 1000, 1) for k, a, b in zip(steps, marks[:-1], marks[1:], strict=True)
    }
    log.debug("conversion timed", extra=kv(media=job.info.id, **spent))
    return events


async def _commit(
    job: Job,
    deps: ConverterDeps,
    built: list[convert.Built],
    numbers: tuple[int, int],
    *,
    transcoded: bool,
) -> list[InstanceCreated]:
    series_uid = convert.series_uid(
        str(job.study_ds.StudyInstanceUID), job.info.source, deps.settings.org_uid_root
    )
    rows = []
    for item in built:
        rel = convert.final_relative(item.sop_instance_uid, job.info.captured_at)
        rows.append(
            repo.NewInstance(
                id=str(uuid.uuid5(uuid.NAMESPACE_OID, item.sop_instance_uid)),
                part=item.part,
                parts=len(built),
                sop_instance_uid=item.sop_instance_uid,
                sop_class_uid=item.sop_class_uid,
                transfer_syntax_uid=item.ts_uid,
                study_instance_uid=str(job.study_ds.StudyInstanceUID),
                series_instance_uid=series_uid,
                series_number=numbers[0],
                instance_number=numbers[1] + item.part - 1,
                rel_path=rel,
                size=item.size,
                sha256=item.sha256,
                rows=item.rows,
                columns=item.columns,
                frames=item.frames,
                transcoded=transcoded,
                note=None,
            )
        )
    new = []
    try:
        async with deps.pool.acquire() as conn, conn.transaction():
            for row, item in zip(rows, built, strict=True):
                # The row's unique key stays locked until we commit: a concurrent delivery of
                # the same job waits here, then finds the row and leaves our file alone.
                if await repo.insert_instance(conn, job.media, row):
                    await asyncio.to_thread(deps.store.commit_temp, item.temp, row.rel_path)
                    new.append(row.sop_instance_uid)
            return await repo.announce(conn, job.media, new, job.msg.auto_send)
    finally:
        for item in built:  # what was not renamed into place (conflict, or a failure)
            item.temp.unlink(missing_ok=True)


async def fail(job_msg: ConvertMedia, deps: ConverterDeps, error: ConversionError) -> None:
    # A media row that is not there cannot hold a job (the job's row refers to it).
    if await repo.load_media(deps.pool, job_msg.media_id) is not None:
        await repo.record_failure(deps.pool, job_msg, error.reason)
    log.warning("conversion failed", extra=kv(media=job_msg.media_id, reason=error.reason))


class _Progress:
    """Thread-side progress callback: publishes ConversionProgressed at most twice a second."""

    def __init__(self, job: Job, deps: ConverterDeps) -> None:
        self.loop = asyncio.get_running_loop()
        self.job, self.bus = job, deps.bus
        self.last = 0.0
        self.stage = ""

    def __call__(self, fraction: float, stage: str) -> None:
        now = time.monotonic()
        if stage == self.stage and now - self.last < 0.5 and fraction < 1.0:
            return
        self.last, self.stage = now, stage
        msg = ConversionProgressed(
            media_id=self.job.info.id,
            study_id=self.job.study.id,
            fraction=round(min(1.0, max(0.0, fraction)), 4),
            stage=stage,
        )
        asyncio.run_coroutine_threadsafe(self.bus.publish_core(msg), self.loop)
