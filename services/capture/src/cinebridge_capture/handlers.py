"""RPC handlers of the room (`cb.rpc.capture.<room>.*`); the subscription table is at the bottom."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cinebridge_common.messages.base import Reply, Request
from cinebridge_common.messages.capture import (
    CaptureCommand,
    CaptureCommandReply,
    CaptureStatusReply,
    CaptureStatusRequest,
    SetRoomStudy,
    SetRoomStudyReply,
)

from .pipeline_types import AlreadyRecording, NoSignal
from .repository import StudyNotFound, StudyPurged
from .room import CaptureRefused, Room
from .supervisor import source_status

#: Outcomes an operator can act on; anything else is logged by the bus as a handler failure.
REFUSALS = (CaptureRefused, NoSignal, AlreadyRecording, StudyNotFound, StudyPurged)


@dataclass(frozen=True)
class Deps:
    room: Room
    preview_url: str | None


def _study(value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise StudyNotFound(f"study id {value[:40]!r} is not a UUID") from exc


def _wrong_room(deps: Deps, room: str) -> str | None:
    return None if room == deps.room.name else f"this is room {deps.room.name}, not {room}"


async def handle_capture_command(msg: CaptureCommand, deps: Deps) -> CaptureCommandReply:
    if error := _wrong_room(deps, msg.room):
        return CaptureCommandReply(ok=False, error=error)
    try:
        study = _study(msg.study_id)
        if msg.action == "snapshot":
            event = await deps.room.snapshot(msg.source, study)
            return CaptureCommandReply(study_id=event.study_id, media_id=event.media_id)
        if msg.action == "record_start":
            meta = await deps.room.record_start(msg.source, study)
            return CaptureCommandReply(
                study_id=str(meta.study_id), recording_id=str(meta.recording_id)
            )
        # Answered at once; the outcome (media id, frames, duration, or why nothing was kept)
        # is the source's `last_recording` in the room status, and a state event tells it.
        stopped = await deps.room.record_stop(msg.source)
        return CaptureCommandReply(
            study_id=str(stopped.study_id), recording_id=str(stopped.recording_id), stopping=True
        )
    except REFUSALS as exc:
        return CaptureCommandReply(ok=False, error=str(exc))


async def handle_capture_status(msg: CaptureStatusRequest, deps: Deps) -> CaptureStatusReply:
    if error := _wrong_room(deps, msg.room):
        return CaptureStatusReply(ok=False, error=error, room=msg.room)
    study = await deps.room.current_study()
    return CaptureStatusReply(
        room=deps.room.name,
        study_id=str(study) if study else None,
        sources=source_status(deps.room, deps.preview_url),
        disk_free_bytes=deps.room.disk_free(),
    )


async def handle_set_room_study(msg: SetRoomStudy, deps: Deps) -> SetRoomStudyReply:
    if error := _wrong_room(deps, msg.room):
        return SetRoomStudyReply(ok=False, error=error)
    try:
        study = _study(msg.study_id)
        await deps.room.set_study(study)
    except StudyNotFound as exc:
        return SetRoomStudyReply(ok=False, error=str(exc))
    return SetRoomStudyReply(study_id=str(study) if study else None)


Handler = Callable[[Any, Deps], Awaitable[Reply]]

#: (request type, handler); each is served on its room-scoped subject.
RPC_HANDLERS: list[tuple[type[Request], Handler]] = [
    (CaptureCommand, handle_capture_command),
    (CaptureStatusRequest, handle_capture_status),
    (SetRoomStudy, handle_set_room_study),
]
