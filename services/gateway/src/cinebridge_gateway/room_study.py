"""The room's current study: one per room, decided by the server.

Where it lives: the capture service's `capture_rooms` row of the room (the capture service
attaches every snapshot and recording to it, or creates an unscheduled study when there is
none). The gateway changes it only through `cb.rpc.capture.<room>.set_study` and reads it back
from the room's status; the browser keeps no copy.

Starting a study (form, worklist item, local study, unscheduled) and making it current is one
request that names the room. Replacing a current study that already holds captured media needs
`confirm: true` (409 `confirmation_required` otherwise), so a patient is never switched by a
stray click.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Annotated, Any, Literal

from cinebridge_common.bus import BusError
from cinebridge_common.db import DB_DOWN
from cinebridge_common.messages import (
    CaptureStatusReply,
    CaptureStatusRequest,
    CatalogDropEmptyStudy,
    CatalogDropEmptyStudyReply,
    SetRoomStudy,
    SetRoomStudyReply,
    WorklistItem,
)
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict

from . import studies_repository
from .deps import ApiError, Gateway, Gw, User, client_of, not_found
from .routes_studies import NewStudy, ask_catalog, insert_new_study, study_values
from .studies import PatientData, display_name

router = APIRouter(prefix="/api/v1", tags=["rooms"])

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RoomName = Annotated[str, Path(pattern=NAME_PATTERN)]


class StudySummary(BaseModel):
    """Who the study is for, as the Room page and every capture reply show it."""

    id: uuid.UUID
    study_instance_uid: str
    origin: str
    #: Edited by hand since it began (statement §8.1.5: a worklist study is then unlinked).
    edited: bool = False
    #: (0008,0060) the instances will carry (empty: the converter's default).
    modality: str = ""
    patient_name: str
    patient_display_name: str
    patient_id: str
    patient_birth_date: str
    accession_number: str
    media_count: int


class RoomStudyOut(BaseModel):
    room: str
    study: StudySummary | None
    previous_study_id: uuid.UUID | None = None


class StartStudy(BaseModel):
    """Start a study in the room and make it current (statement §4.1.3)."""

    model_config = ConfigDict(extra="forbid")
    origin: Literal["form", "worklist", "local", "unscheduled"] = "form"
    patient: PatientData | None = None
    worklist_item: WorklistItem | None = None
    from_study_id: uuid.UUID | None = None
    confirm: bool = False


class OpenStudy(BaseModel):
    """Make an existing study the room's current one (Local search "Open")."""

    model_config = ConfigDict(extra="forbid")
    study_id: uuid.UUID
    confirm: bool = False


#: Errors of a database that is away (or too slow to answer a page).
ROOMS_UNAVAILABLE: tuple[type[Exception], ...] = (TimeoutError, *DB_DOWN)


async def known_rooms(gw: Gateway) -> list[str]:
    """Rooms a capture instance reports, has a preview configured, or has served before (the
    last only while the database answers: the ops page lists rooms during its outage too)."""
    try:
        served = await asyncio.wait_for(_served_rooms(gw), 3.0)
    except ROOMS_UNAVAILABLE:
        served = []
    return sorted(set(gw.board.rooms()) | set(gw.settings.gateway_preview_upstreams) | set(served))


async def _served_rooms(gw: Gateway) -> list[str]:
    if not await gw.repo.has_table("capture_served_rooms"):
        return []
    return await studies_repository.served_rooms(gw.pool)


async def require_room(gw: Gateway, room: str) -> None:
    """404 for a room nobody knows: not reported, configured or served before, and no capture
    service answers for it."""
    if room in await known_rooms(gw):
        return
    try:
        reply = await gw.bus.request(CaptureStatusRequest(room=room), CaptureStatusReply, 2.0)
    except BusError:
        reply = None
    if reply is None or not reply.ok:
        raise not_found(f"room {room!r}")


async def study_summary(gw: Gateway, study_id: uuid.UUID | None) -> dict[str, Any] | None:
    if study_id is None:
        return None
    row = await studies_repository.study_summary(gw.pool, study_id)
    if row is None:
        return None
    return {**dict(row), "patient_display_name": display_name(row["patient_name"])}


async def current_study_id(gw: Gateway, room: str) -> uuid.UUID | None:
    """The room's current study, asked of its capture service (the one place it lives)."""
    reply = await gw.bus.request(
        CaptureStatusRequest(room=room), CaptureStatusReply, gw.settings.gateway_rpc_timeout_s
    )
    if not reply.ok:
        raise ApiError(503, "capture_unavailable", reply.error or "the capture service refused")
    return uuid.UUID(reply.study_id) if reply.study_id else None


async def _check_switch(gw: Gateway, current: uuid.UUID | None, confirm: bool, verb: str) -> None:
    """Leaving a study that holds captured media needs the operator's confirmation."""
    summary = await study_summary(gw, current)
    if summary is None or summary["media_count"] == 0 or confirm:
        return
    who = summary["patient_display_name"] or "an unnamed patient"
    raise ApiError(
        409,
        "confirmation_required",
        f"the current study ({who}, ID {summary['patient_id'] or 'none'}) holds "
        f"{summary['media_count']} captured item(s); {verb} it only with confirm=true",
    )


async def _set_current(gw: Gateway, room: str, study_id: uuid.UUID | None) -> None:
    msg = SetRoomStudy(room=room, study_id=str(study_id) if study_id else None)
    try:
        reply = await gw.bus.request(msg, SetRoomStudyReply, gw.settings.gateway_rpc_timeout_s)
    except BusError as exc:
        raise ApiError(503, "capture_unavailable", f"room {room}: {exc}") from None
    if not reply.ok:
        raise ApiError(409, "capture_refused", reply.error or "the capture service refused")


async def _answer(
    gw: Gateway, room: str, study_id: uuid.UUID | None, previous: uuid.UUID | None
) -> dict[str, Any]:
    return {
        "room": room,
        "study": await study_summary(gw, study_id),
        "previous_study_id": previous if previous != study_id else None,
    }


@router.get("/rooms/{room}/study", response_model=RoomStudyOut)
async def get_room_study(room: RoomName, _: User, gw: Gw) -> dict[str, Any]:
    """The room's current study (none: the next capture creates an unscheduled one)."""
    await require_room(gw, room)
    current = await current_study_id(gw, room)
    return await _answer(gw, room, current, None)


@router.post("/rooms/{room}/study", response_model=RoomStudyOut, status_code=201)
async def start_room_study(
    room: RoomName, body: StartStudy, principal: User, request: Request, gw: Gw
) -> dict[str, Any]:
    """Start a study and make it the room's current one, in one request."""
    await require_room(gw, room)
    previous = await current_study_id(gw, room)
    await _check_switch(gw, previous, body.confirm, "replace")
    values = await study_values(gw, NewStudy(**body.model_dump(exclude={"confirm"})), room)
    study = await insert_new_study(gw, values, body.origin, principal.name, client_of(request))
    try:
        await _set_current(gw, room, study["id"])
    except ApiError:
        # The room did not take it: the new study (no media can be attached yet) goes again,
        # when the catalog answers; an empty study left behind harms nothing.
        drop = CatalogDropEmptyStudy(study_id=str(study["id"]), by=principal.name)
        with contextlib.suppress(ApiError):
            await ask_catalog(gw, drop, CatalogDropEmptyStudyReply)
        raise
    await _audit(gw, principal.name, request, room, study["id"], previous)
    return await _answer(gw, room, study["id"], previous)


@router.put("/rooms/{room}/study", response_model=RoomStudyOut)
async def open_room_study(
    room: RoomName, body: OpenStudy, principal: User, request: Request, gw: Gw
) -> dict[str, Any]:
    """Make an existing study current (new snapshots and recordings attach to it)."""
    await require_room(gw, room)
    if await gw.repo.get_study(gw.pool, body.study_id) is None:
        raise not_found("study")
    previous = await current_study_id(gw, room)
    if previous != body.study_id:
        await _check_switch(gw, previous, body.confirm, "replace")
        await _set_current(gw, room, body.study_id)
        await _audit(gw, principal.name, request, room, body.study_id, previous)
    return await _answer(gw, room, body.study_id, previous)


@router.delete("/rooms/{room}/study", response_model=RoomStudyOut)
async def close_room_study(
    room: RoomName, principal: User, request: Request, gw: Gw
) -> dict[str, Any]:
    """ "Close study": the room has no current study; its media stay with it (Save, Forward
    from Local search). The next capture creates an unscheduled study."""
    await require_room(gw, room)
    previous = await current_study_id(gw, room)
    if previous is not None:
        await _set_current(gw, room, None)
        await gw.repo.audit(
            gw.pool,
            principal.name,
            "room_study_closed",
            study_id=previous,
            target=room,
            client=client_of(request),
        )
    return await _answer(gw, room, None, previous)


async def _audit(
    gw: Gateway,
    actor: str,
    request: Request,
    room: str,
    study_id: uuid.UUID,
    previous: uuid.UUID | None,
) -> None:
    await gw.repo.audit(
        gw.pool,
        actor,
        "room_study_set",
        study_id=study_id,
        target=room,
        detail={"previous_study_id": str(previous) if previous else None},
        client=client_of(request),
    )
