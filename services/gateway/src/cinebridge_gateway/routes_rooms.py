"""Rooms and sources: live status, capture actions, the room's current study, live preview
(the WORKLIST dialog's search is in `routes_worklist`)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import httpx
from cinebridge_common.bus import BusError
from cinebridge_common.messages import (
    CaptureCommand,
    CaptureCommandReply,
    CaptureStatusReply,
    CaptureStatusRequest,
)
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from .deps import ApiError, Gw, User, client_of, not_found
from .room_study import (
    ROOMS_UNAVAILABLE,
    RoomName,
    StudySummary,
    known_rooms,
    require_room,
    study_summary,
)

router = APIRouter(prefix="/api/v1", tags=["rooms"])

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SourceName = Annotated[str, Path(pattern=NAME_PATTERN)]
Action = Literal["snapshot", "record_start", "record_stop"]


class RoomOut(BaseModel):
    room: str
    reachable: bool
    study_id: str | None = None
    #: The room's current study (who the next capture is for); none: the next capture
    #: creates an unscheduled study.
    study: StudySummary | None = None
    sources: list[dict[str, Any]] = []
    disk_free_bytes: int | None = None
    error: str | None = None


class CaptureResult(BaseModel):
    ok: bool
    study_id: str | None = None
    #: The study the media was attached to (patient name, ID, accession).
    study: StudySummary | None = None
    media_id: str | None = None
    recording_id: str | None = None
    #: Why a stopped recording ended before the request (e.g. disk full); what was written is kept.
    detail: str | None = None
    #: Stop was taken: the recording is finished in the background; the room's source shows
    #: `stopping`, then its `last_recording` (duration and frames, or why nothing was kept).
    stopping: bool = False


async def room_status(gw: Gw, room: str) -> dict[str, Any]:
    try:
        reply = await gw.bus.request(
            CaptureStatusRequest(room=room),
            CaptureStatusReply,
            min(gw.settings.gateway_rpc_timeout_s, 3.0),
        )
    except BusError as exc:
        return {"room": room, "reachable": False, "error": str(exc)}
    if not reply.ok:
        return {"room": room, "reachable": False, "error": reply.error}
    sources = [s.model_dump() for s in reply.sources]
    for src in sources:
        src["preview_url"] = f"/api/v1/rooms/{room}/sources/{src['name']}/preview.mjpg"
        src["thumbnail_url"] = f"/api/v1/rooms/{room}/sources/{src['name']}/thumbnail.jpg"
    return {
        "room": room,
        "reachable": reply.ok,
        "study_id": reply.study_id,
        "study": await _summary_if_db(gw, reply.study_id),
        "sources": sources,
        "disk_free_bytes": reply.disk_free_bytes,
        "error": reply.error,
    }


async def _summary_if_db(gw: Gw, study_id: str | None) -> dict[str, Any] | None:
    """Who the room's study is for; none while the database is away (the ops page still shows
    the room and its sources)."""
    try:
        return await asyncio.wait_for(
            study_summary(gw, uuid.UUID(study_id) if study_id else None), 3.0
        )
    except ROOMS_UNAVAILABLE:
        return None


@router.get("/rooms", response_model=list[RoomOut])
async def list_rooms(_: User, gw: Gw) -> list[dict[str, Any]]:
    rooms = await known_rooms(gw)
    return list(await asyncio.gather(*(room_status(gw, r) for r in rooms)))


@router.get("/rooms/{room}", response_model=RoomOut)
async def get_room(room: RoomName, _: User, gw: Gw) -> dict[str, Any]:
    await require_room(gw, room)
    return await room_status(gw, room)


@router.post("/rooms/{room}/sources/{source}/{action}", response_model=CaptureResult)
async def capture_action(
    room: RoomName,
    source: SourceName,
    action: Action,
    principal: User,
    request: Request,
    gw: Gw,
) -> CaptureResult:
    """Snapshot / Record / Stop on one source (the operator's buttons and pedal shortcuts).
    The answer names the study the media went to (the current one, or a new unscheduled
    study when the room had none)."""
    await require_room(gw, room)
    cmd = CaptureCommand(room=room, source=source, action=action, requested_by=principal.name)
    reply = await gw.bus.request(cmd, CaptureCommandReply, gw.settings.gateway_rpc_timeout_s)
    if not reply.ok:
        raise ApiError(409, "capture_refused", reply.error or "the capture service refused")
    study = uuid.UUID(reply.study_id) if reply.study_id else None
    await gw.repo.audit(
        gw.pool,
        principal.name,
        f"capture_{action}",
        study_id=study,
        target=f"{room}/{source}",
        detail={"media_id": reply.media_id},
        client=client_of(request),
    )
    return CaptureResult(
        ok=True,
        study_id=reply.study_id,
        study=await study_summary(gw, study),
        media_id=reply.media_id,
        recording_id=reply.recording_id,
        detail=reply.detail,
        stopping=reply.stopping,
    )


async def _preview_base(gw: Gw, room: str, source: str) -> str:
    """Where the room's capture instance serves its previews and thumbnails: the configured
    base URL (compose: the capture container's name), else the base of the preview URL the
    capture service reports in its status (fine when both run on one host)."""
    configured = gw.settings.gateway_preview_upstreams.get(room)
    if configured:
        return configured.rstrip("/")
    try:
        reply = await gw.bus.request(CaptureStatusRequest(room=room), CaptureStatusReply, 3.0)
    except BusError:
        reply = None
    suffix = f"/preview/{source}.mjpg"
    for status in reply.sources if reply else []:
        url = status.preview_url or ""
        if status.name == source and url.startswith(("http://", "https://")):
            return url.removesuffix(suffix)
    raise not_found(f"preview of {room}/{source} (set CB_GATEWAY_PREVIEW_UPSTREAMS)")


@router.get(
    "/rooms/{room}/sources/{source}/preview.mjpg",
    responses={200: {"description": "MJPEG stream", "content": {"multipart/x-mixed-replace": {}}}},
)
async def preview(room: RoomName, source: SourceName, _: User, gw: Gw) -> StreamingResponse:
    """Relays the capture instance's MJPEG preview, so the browser needs only the gateway."""
    url = f"{await _preview_base(gw, room, source)}/preview/{source}.mjpg"
    client = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=30.0))
    try:
        upstream = await client.send(client.build_request("GET", url), stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        raise ApiError(502, "preview_unavailable", f"preview upstream unreachable: {exc}") from None
    if upstream.status_code != 200:
        await upstream.aclose()
        await client.aclose()
        raise ApiError(502, "preview_unavailable", f"preview upstream said {upstream.status_code}")

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError:
            return
        finally:
            with contextlib.suppress(Exception):
                await upstream.aclose()
                await client.aclose()

    media_type = upstream.headers.get("content-type", "multipart/x-mixed-replace")
    return StreamingResponse(relay(), media_type=media_type, headers={"Cache-Control": "no-store"})


@router.get(
    "/rooms/{room}/sources/{source}/thumbnail.jpg",
    responses={200: {"description": "JPEG", "content": {"image/jpeg": {}}}},
)
async def thumbnail(room: RoomName, source: SourceName, _: User, gw: Gw) -> Response:
    """Relays the capture instance's periodic thumbnail of a source (dashboards)."""
    url = f"{await _preview_base(gw, room, source)}/thumbnail/{source}.jpg"
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            upstream = await client.get(url)
    except httpx.HTTPError as exc:
        raise ApiError(502, "preview_unavailable", f"preview upstream unreachable: {exc}") from None
    if upstream.status_code == 503:
        raise ApiError(503, "no_signal", f"no picture of {room}/{source} yet")
    if upstream.status_code != 200 or not upstream.content.startswith(b"\xff\xd8"):
        raise ApiError(502, "preview_unavailable", f"preview upstream said {upstream.status_code}")
    headers = {"Cache-Control": "no-store"}
    return Response(upstream.content, media_type="image/jpeg", headers=headers)
