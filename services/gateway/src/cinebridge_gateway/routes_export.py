"""Export of a study (MP4/JPEG, DICOM media with a DICOMDIR, de-identified copy): the converter
writes it (`cb.rpc.converter.export`); the gateway checks the role, audits every outcome and
streams a download."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from cinebridge_common.messages import ExportStudy, ExportStudyReply
from cinebridge_common.store import UnsafePath
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict

from .deps import ApiError, Gateway, Gw, User, client_of, not_found
from .repository import Principal
from .security import role_allows
from .study_access import study_with_files

router = APIRouter(prefix="/api/v1", tags=["studies"])


async def exporter(principal: User) -> Principal:
    """Exports carry patient data off the station: operators and administrators only (a
    viewer's POST is refused earlier; this also guards the download, a GET)."""
    if not role_allows(principal.role, "operator"):
        raise ApiError(403, "forbidden", f"the {principal.role} role may not export studies")
    return principal


Exporter = Annotated[Principal, Depends(exporter)]


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: mp4: each recording as MP4 (H.264) and each snapshot as JPEG; dicomdir: DICOM media
    #: (PS3.10/PS3.11 General Purpose profile) with a DICOMDIR; deid: the same de-identified
    #: per PS3.15 Annex E.
    kind: Literal["mp4", "dicomdir", "deid"]
    #: download: a ZIP to fetch from `download_url`; folder: the converter's export folder
    #: (a mounted USB stick or network share).
    target: Literal["download", "folder"] = "download"
    #: mp4: the patient/date caption burned into the pictures or as a side-car text file.
    caption: Literal["none", "burned", "sidecar"] = "none"
    #: deid: PS3.15 E.3.6 (Modified Dates) and E.3.5 options; unset: the station's settings.
    retain_dates: bool | None = None
    clean_descriptors: bool | None = None


class ExportOut(BaseModel):
    export_id: str
    kind: str
    target: str
    files: int
    bytes: int
    warnings: list[str]
    #: The ZIP (download), or the folder written (folder).
    download_url: str | None = None
    folder: str | None = None


@router.post("/studies/{study_id}/export", response_model=ExportOut)
async def export_study(
    study_id: uuid.UUID, body: ExportRequest, principal: Exporter, request: Request, gw: Gw
) -> dict[str, Any]:
    """Export the study; answers when the files are written (the converter may take minutes
    for a burned-in caption, which re-encodes every recording)."""
    # Every kind of export reads the study's local files (media or DICOM): refused, never
    # half-written, once a purge started.
    await study_with_files(gw, study_id)
    export_id = str(uuid.uuid4())
    req = ExportStudy(
        export_id=export_id,
        study_id=str(study_id),
        requested_by=principal.name,
        **body.model_dump(),
    )
    detail: dict[str, Any] = {"export_id": export_id, **body.model_dump(exclude_none=True)}
    try:
        reply = await gw.bus.request(req, ExportStudyReply, gw.settings.gateway_export_timeout_s)
    except Exception as exc:
        await _audit(gw, principal, request, study_id, "study_export_failed", detail, str(exc))
        raise
    if not reply.ok:
        error = reply.error or "the converter refused the export"
        await _audit(gw, principal, request, study_id, "study_export_failed", detail, error)
        raise ApiError(409, "export_refused", error)
    detail.update(files=reply.files, bytes=reply.bytes, warnings=reply.warnings)
    where = "download" if body.target == "download" else reply.location
    await _audit(gw, principal, request, study_id, "study_exported", detail, None, where)
    out: dict[str, Any] = {
        "export_id": export_id,
        "kind": body.kind,
        "target": body.target,
        "files": reply.files,
        "bytes": reply.bytes,
        "warnings": reply.warnings,
    }
    if body.target == "download":
        out["download_url"] = f"/api/v1/exports/{export_id}.zip"
    else:
        out["folder"] = reply.location
    return out


@router.get(
    "/exports/{export_id}.zip",
    responses={200: {"description": "The export as a ZIP", "content": {"application/zip": {}}}},
)
async def export_download(
    export_id: uuid.UUID, principal: Exporter, request: Request, gw: Gw
) -> FileResponse:
    """A finished export, kept by the converter for a day (CB_CONVERTER_EXPORT_KEEP_S)."""
    try:
        path = gw.store.resolve(f"exports/{export_id}.zip")
    except UnsafePath:
        raise not_found("export") from None
    if not path.is_file():
        raise not_found("export")
    await gw.repo.audit(
        gw.pool,
        principal.name,
        "export_downloaded",
        study_id=await gw.repo.exported_study(str(export_id)),
        target=str(export_id),
        client=client_of(request),
    )
    name = f"cinebridge-export-{str(export_id)[:8]}.zip"
    return FileResponse(
        path,
        media_type="application/zip",
        filename=name,
        headers={"Cache-Control": "private, no-store"},
    )


async def _audit(
    gw: Gateway,
    principal: Principal,
    request: Request,
    study_id: uuid.UUID,
    action: str,
    detail: dict[str, Any],
    error: str | None,
    target: str | None = None,
) -> None:
    """One row per outcome: who, which study (and so which patient), what, where."""
    if error is not None:
        detail = {**detail, "error": error[:500]}
    await gw.repo.audit(
        gw.pool,
        principal.name,
        action,
        study_id=study_id,
        target=target,
        detail=detail,
        client=client_of(request),
    )
