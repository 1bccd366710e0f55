"""Export of a study (the `cb.rpc.converter.export` request): MP4/JPEG files, DICOM media with a
DICOMDIR (PS3.10 / PS3.11 General Purpose USB and CD profiles), or a de-identified copy on the
same media (PS3.15 Annex E), into a folder of the export area or of the export folder.

The files are written by a worker thread (`write_export`); a download is then zipped to
`exports/<export id>.zip` in the media store for the gateway to stream. Names inside an export
are generated (`REC001.mp4`, PS3.10 file IDs `PT000000/ST000000/...`), never taken from the
patient's data or from a source's name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import shutil
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from cinebridge_common.logging import kv
from cinebridge_common.messages import ExportStudy, ExportStudyReply
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.tag import Tag

from . import repository as repo
from .deidentify import Deidentifier, DeidOptions, burned_in_warning
from .export_media import export_recording, export_still
from .jobs import ConverterDeps
from .mwl import StudyInfo
from .settings import ConverterSettings

log = logging.getLogger(__name__)
EXPORT_AREA = "exports"
#: File-set ID of the media (PS3.3 F.3.2.1: up to 16 characters of CS, no patient data).
FILE_SET_ID = "CINEBRIDGE"
PIXEL_DATA = Tag(0x7FE0, 0x0010)
UNDEFINED_LENGTH = 0xFFFFFFFF


class ExportRefused(Exception):
    """The export cannot be made as asked (no export folder, nothing to export)."""


@dataclass(frozen=True)
class Source:
    kind: str  # "snapshot" | "recording"
    path: Path


@dataclass
class ExportResult:
    files: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExportPlan:
    kind: str
    caption: str
    deid: DeidOptions
    seed: str
    overlay_sources: tuple[str, ...] = ()
    preset: str = "veryfast"


def caption_text(study: StudyInfo) -> str:
    """ "Doe, Jane  P-1  2026-12-07": the patient and the study date, for a caption."""
    name = ", ".join(p for p in study.patient_name.split("^")[:2] if p) or "(no name)"
    date = study.study_date or study.created_at.strftime("%Y%m%d")
    shown = f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else date
    return "  ".join(p for p in (name, study.patient_id, shown) if p)


def write_export(
    plan: ExportPlan,
    study: StudyInfo,
    media: list[Source],
    instances: list[Path],
    out: Path,
    cancel: threading.Event,
) -> ExportResult:
    """Write the export into the empty folder `out`."""
    result = ExportResult()
    if plan.kind == "mp4":
        _write_files(plan, study, media, out, cancel)
    else:
        if not instances:
            raise ExportRefused("the study has no DICOM instances yet: save it first")
        _write_media(plan, instances, out, result, cancel)
    for path in out.rglob("*"):
        if path.is_file():
            result.files += 1
            result.bytes += path.stat().st_size
    return result


def _write_files(
    plan: ExportPlan, study: StudyInfo, media: list[Source], out: Path, cancel: threading.Event
) -> None:
    if not media:
        raise ExportRefused("the study has no snapshots or recordings")
    text = caption_text(study)
    burned = text if plan.caption == "burned" else None
    counts = {"recording": 0, "snapshot": 0}
    for item in media:
        counts[item.kind] += 1
        if item.kind == "recording":
            dest = out / f"REC{counts['recording']:03d}.mp4"
            export_recording(item.path, dest, caption=burned, preset=plan.preset, cancel=cancel)
        else:
            dest = out / f"IMG{counts['snapshot']:03d}.jpg"
            export_still(item.path, dest, caption=burned)
        if plan.caption == "sidecar":
            dest.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")


def _write_media(
    plan: ExportPlan,
    instances: list[Path],
    out: Path,
    result: ExportResult,
    cancel: threading.Event,
) -> None:
    """DICOM media: the instances (de-identified for "deid") with a DICOMDIR at the root."""
    fs = FileSet()
    fs.ID = FILE_SET_ID
    deid = Deidentifier(plan.deid, plan.seed) if plan.kind == "deid" else None
    warned: dict[str, int] = {}
    for path in instances:
        if cancel.is_set():
            raise ExportRefused("the converter is stopping")
        if deid is None:
            # The directory records need the header only; the staged file is then the original
            # copied as is (pydicom stages every added instance as a file, and `write` copies).
            instance = fs.add(dcmread(path, stop_before_pixels=True))
            shutil.copyfile(path, instance.path)
            continue
        # Values over 64 KB (the video) stay in the file until written: see _pixels_last.
        ds = dcmread(path, defer_size=1 << 16)
        why = burned_in_warning(ds, plan.overlay_sources)
        if why is not None:
            warned[why] = warned.get(why, 0) + 1
        pixels_at = _pixels_last(ds, path)
        if pixels_at is not None:
            del ds[PIXEL_DATA]
        deid.apply(ds)
        instance = fs.add(ds)
        if pixels_at is not None:
            with path.open("rb") as src, open(instance.path, "ab") as staged:
                src.seek(pixels_at)
                shutil.copyfileobj(src, staged, 1 << 20)
    fs.write(out)
    for why, count in warned.items():
        result.warnings.append(
            f"{count} instance(s): {why}; the pixels are not cleaned (PS3.15 E.3.1 Clean Pixel"
            " Data is not applied): check every picture before sharing"
        )


def _pixels_last(ds: Dataset, path: Path) -> int | None:
    """Where the encapsulated Pixel Data element begins in `path`, when nothing follows it and
    it can be copied as bytes after the de-identified header (a recording of gigabytes is then
    never in memory); None: the data set is written whole.

    Only an undefined-length Explicit VR element (PS3.5 A.4: encapsulated, 12-byte header)
    qualifies; an element after it (a private group 7FE1, trailing padding) would be copied
    without de-identification, so such a file is written whole too."""
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.length != UNDEFINED_LENGTH:
        return None
    implicit, little = ds.original_encoding
    if implicit or not little or any(tag > PIXEL_DATA for tag in ds.keys()):
        return None
    start = raw.value_tell - 12
    with path.open("rb") as fh:
        fh.seek(start)
        header = fh.read(8)
    return start if header == b"\xe0\x7f\x10\x00OB\x00\x00" else None


def zip_folder(folder: Path, dest: Path) -> None:
    """Stored, not deflated: MP4, JPEG and compressed DICOM do not shrink."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())


def purge_old_exports(area: Path, keep_s: float) -> int:
    """Downloads are kept `keep_s` seconds: long enough to fetch, not a second archive."""
    removed, cutoff = 0, time.time() - keep_s
    for path in area.glob("*") if area.is_dir() else ():
        if path.stat().st_mtime < cutoff:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    return removed


async def run_export(req: ExportStudy, deps: ConverterDeps) -> ExportStudyReply:
    """Load the study, write the export in a worker thread, zip a download."""
    settings = deps.settings
    export_id = str(uuid.UUID(req.export_id))  # a generated id: safe as a path component
    study = await repo.load_study(deps.pool, uuid.UUID(req.study_id))
    if study is None:
        raise ExportRefused("study not found")
    media = [
        Source(r["kind"], deps.store.resolve(r["rel_path"]))
        for r in await repo.export_media(deps.pool, uuid.UUID(req.study_id))
    ]
    instances = [
        deps.store.resolve(r["rel_path"])
        for r in await repo.export_instances(deps.pool, uuid.UUID(req.study_id))
    ]
    plan = plan_for(req, settings, export_id)
    area = deps.store.resolve(EXPORT_AREA)
    area.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(purge_old_exports, area, settings.converter_export_keep_s)
    if req.target == "folder":
        if settings.converter_export_folder is None:
            raise ExportRefused("no export folder is configured (CB_CONVERTER_EXPORT_FOLDER)")
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        out = settings.converter_export_folder / f"cinebridge-{stamp}-{export_id[:8]}"
    else:
        out = area / export_id
    out.mkdir(parents=True)
    try:
        result = await asyncio.to_thread(
            write_export, plan, study, media, instances, out, deps.cancel
        )
        location = str(out)
        if req.target == "download":
            await asyncio.to_thread(zip_folder, out, area / f"{export_id}.zip.part")
            (area / f"{export_id}.zip.part").rename(area / f"{export_id}.zip")
            location = f"{EXPORT_AREA}/{export_id}.zip"
    except BaseException:
        (area / f"{export_id}.zip.part").unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if req.target == "download":
            shutil.rmtree(out, ignore_errors=True)
    log.info("exported", extra=kv(export=export_id, kind=req.kind, files=result.files))
    return ExportStudyReply(
        export_id=export_id,
        location=location,
        files=result.files,
        bytes=result.bytes,
        warnings=result.warnings,
    )


def plan_for(req: ExportStudy, settings: ConverterSettings, export_id: str) -> ExportPlan:
    """The request's options, the station's settings where the request leaves them open."""
    return ExportPlan(
        kind=req.kind,
        caption=req.caption,
        deid=DeidOptions(
            retain_dates=_choose(req.retain_dates, settings.converter_export_retain_dates),
            clean_descriptors=_choose(
                req.clean_descriptors, settings.converter_export_clean_descriptors
            ),
        ),
        # What the UID and value replacement is keyed on: secret to the recipient (never written
        # into the export), one per export.
        seed=export_id + secrets.token_hex(16),
        overlay_sources=tuple(settings.converter_export_overlay_sources),
        preset=settings.converter_x264_preset,
    )


def _choose(asked: bool | None, default: bool) -> bool:
    return default if asked is None else asked
