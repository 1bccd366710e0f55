""" "Add file": an external video or image added to the room's current study, like a capture.

`POST /api/v1/rooms/{room}/upload?filename=NAME` with the file as the raw request body
(`Content-Type: application/octet-stream`; the browser sends the File object itself). The body
is streamed to the media store (`uploads.receive`), probed by content, put in place, and
registered by the study catalog (capture, `cb.rpc.capture.catalog.add_media`) as it registers a
snapshot or recording; "Save" converts it with the study's other
media (same ConvertMedia job, same decode check, same IOD profile).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from cinebridge_common.bus import BusError
from cinebridge_common.messages import CatalogAddMedia, CatalogAddMediaReply
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from . import uploads
from .deps import ApiError, ErrorBody, Gw, User, client_of
from .room_study import RoomName, StudySummary, current_study_id, require_room, study_summary
from .study_access import refuse_purged

router = APIRouter(prefix="/api/v1", tags=["rooms"])

#: The upload route's path: the body-size middleware (`web.py`) leaves its limit to the route.
UPLOAD_PATH = r"^/api/v1/rooms/[A-Za-z0-9_-]{1,64}/upload$"


class UploadOut(BaseModel):
    media_id: str
    study_id: str
    kind: str  # snapshot | recording
    mime: str
    size: int
    width: int
    height: int
    study: StudySummary | None = None


@router.post(
    "/rooms/{room}/upload",
    response_model=UploadOut,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
    responses={
        409: {"model": ErrorBody, "description": "the room has no current study"},
        410: {"model": ErrorBody, "description": "the current study was purged (docs/purge.md)"},
        413: {"model": ErrorBody, "description": "larger than CB_GATEWAY_UPLOAD_MAX_BYTES"},
        415: {"model": ErrorBody, "description": "empty, or not a video or an image"},
    },
)
async def upload_media(
    room: RoomName,
    principal: User,
    request: Request,
    gw: Gw,
    filename: Annotated[str, Query(max_length=255, description="shown in the audit log")] = "",
) -> UploadOut:
    """Add an externally recorded video or image (JPEG, PNG, BMP) to the room's current
    study. The operator role or above; a viewer is refused like every other change."""
    await require_room(gw, room)
    study_id = await current_study_id(gw, room)
    if study_id is None:
        raise ApiError(
            409, "no_current_study", "the room has no current study: start or open one first"
        )
    # A file added to a purged study would stand alone beside an archive copy it is not part
    # of: the operator starts a new study (or opens the archive's) instead.
    await refuse_purged(gw, study_id)
    limit = gw.settings.gateway_upload_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", _too_large(limit))
    try:
        received = await uploads.receive(gw.store, request.stream(), limit)
    except uploads.TooLarge:
        raise ApiError(413, "too_large", _too_large(limit)) from None
    except ClientDisconnect:
        raise ApiError(400, "upload_interrupted", "the upload ended before the file") from None
    try:
        if received.size == 0:
            raise ApiError(415, "not_media", "the file is empty")
        try:
            found = await asyncio.to_thread(uploads.probe, received.temp)
        except uploads.NotMedia as exc:
            raise ApiError(415, "not_media", str(exc)) from None
        event = await _register(gw, received, found, study_id, room, principal.name, request)
    finally:
        received.temp.unlink(missing_ok=True)  # renamed into place, or refused
    return UploadOut(
        media_id=event.media_id,
        study_id=event.study_id,
        kind=event.kind,
        mime=event.mime,
        size=event.size,
        width=found.width,
        height=found.height,
        study=await study_summary(gw, study_id),  # type: ignore[arg-type]
    )


async def _register(
    gw: Gw,
    received: uploads.Received,
    found: uploads.Probed,
    study_id: uuid.UUID,
    room: str,
    actor: str,
    request: Request,
) -> Any:
    filename = request.query_params.get("filename", "")[:255]
    event = uploads.media_event(gw.store, received, found, study_id=study_id, room=room)
    # In place before the catalog records it: a media row always has its file.
    await asyncio.to_thread(gw.store.commit_temp, received.temp, event.rel_path)
    try:
        reply = await gw.bus.request(
            CatalogAddMedia(media=event), CatalogAddMediaReply, gw.settings.gateway_rpc_timeout_s
        )
    except BusError as exc:
        # No answer is no proof that no row was written: the file stays (a file without a row
        # is harmless; a row without its file is not).
        raise ApiError(503, "catalog_unavailable", f"the study catalog (capture): {exc}") from None
    if not reply.ok:
        await asyncio.to_thread(gw.store.delete, event.rel_path)
        raise ApiError(409, "catalog_refused", reply.error or "the study catalog refused")
    await gw.repo.audit(
        gw.pool,
        actor,
        "media_uploaded",
        study_id=study_id,
        target=f"{room}/{uploads.SOURCE}",
        detail={
            "media_id": event.media_id,
            "kind": event.kind,
            "size": event.size,
            "filename": filename,
        },
        client=client_of(request),
    )
    return event


def _too_large(limit: int) -> str:
    return f"the file is larger than the upload limit of {limit / 1e6:.0f} MB"
