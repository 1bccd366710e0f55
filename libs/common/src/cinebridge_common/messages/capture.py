"""Messages the capture service produces and the requests it answers."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from .base import Event, Reply, Request
from .worklist import WorklistItem

MediaKind = Literal["snapshot", "recording"]


class MediaCaptured(Event):
    """A snapshot or recording is durable in the media store (claim check: path, size, SHA-256)."""

    subject: ClassVar[str] = "cb.evt.media.captured"
    media_id: str
    study_id: str
    room: str
    source: str
    kind: MediaKind
    rel_path: str
    size: int
    sha256: str
    mime: str
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    duration_s: float | None = None
    fps: float | None = None
    codec: str | None = None
    recovered: bool = False


class CaptureStateChanged(Event):
    """A source's state changed (signal lost, recording started, ...)."""

    subject: ClassVar[str] = "cb.evt.capture.state_changed"
    room: str
    source: str
    #: `stopping`: Stop was answered and the recording is being finished (queued frames encoded,
    #: file closed and registered); the source's `last_recording` says how it ended.
    state: Literal["idle", "recording", "stopping", "no-signal", "error", "starting"]
    detail: str | None = None
    recording_id: str | None = None


class RoomStudyChanged(Event):
    """A room's current study changed (set from a screen or the API, closed, or an unscheduled
    study created by a capture): every screen showing the room shows the new one at once."""

    subject: ClassVar[str] = "cb.evt.room.study_changed"
    room: str
    study_id: str | None = None


class CaptureCommand(Request):
    """Snapshot / record start / record stop on one source of a room."""

    subject: ClassVar[str] = "cb.rpc.capture.{room}.command"
    room: str
    source: str
    action: Literal["snapshot", "record_start", "record_stop"]
    study_id: str | None = None
    requested_by: str | None = None


class CaptureCommandReply(Reply):
    subject: ClassVar[str] = "cb.rpc.capture.reply"
    study_id: str | None = None
    media_id: str | None = None
    recording_id: str | None = None
    #: Why a stopped recording ended before the request (e.g. disk full); what was written is kept.
    detail: str | None = None
    #: Stop answers at once: the recording is finished in the background (an encoder far behind
    #: may need longer than a request may wait); the room status's `last_recording` of the
    #: source gives the outcome (duration, frames, or why nothing was kept).
    stopping: bool = False


class RecordingOutcome(BaseModel):
    """How a source's last stopped recording ended, once known (`stopping` until then)."""

    recording_id: str
    study_id: str
    state: Literal["stopping", "done", "empty", "failed"]
    media_id: str | None = None
    frames: int | None = None
    duration_s: float | None = None
    #: Why it ended before the request (disk full, source lost...), or why it was not kept.
    detail: str | None = None


class SourceStatus(BaseModel):
    name: str
    kind: str
    url: str
    state: str
    signal: bool
    width: int | None = None
    height: int | None = None
    fps_in: float | None = None
    fps_encoded: float | None = None
    dropped_frames: int = 0
    recording_id: str | None = None
    recording_seconds: float | None = None
    preview_url: str | None = None
    last_recording: RecordingOutcome | None = None


class CaptureStatusRequest(Request):
    subject: ClassVar[str] = "cb.rpc.capture.{room}.status"
    room: str


class CaptureStatusReply(Reply):
    subject: ClassVar[str] = "cb.rpc.capture.reply"
    room: str
    study_id: str | None = None
    sources: list[SourceStatus] = []
    disk_free_bytes: int | None = None


class SetRoomStudy(Request):
    """Make a study the room's current one (new captures attach to it)."""

    subject: ClassVar[str] = "cb.rpc.capture.{room}.set_study"
    room: str
    study_id: str | None


class SetRoomStudyReply(Reply):
    subject: ClassVar[str] = "cb.rpc.capture.reply"
    study_id: str | None = None


class CatalogReconcile(Request):
    """Link a local study (e.g. unscheduled) to a worklist item: the study takes the item's
    Study Instance UID and its statement Table 38 attributes. Answered by any capture process
    (the study catalog's owner); the item was checked by the worklist service before."""

    subject: ClassVar[str] = "cb.rpc.capture.catalog.reconcile"
    study_id: str
    item: WorklistItem
    by: str | None = None


class CatalogReconcileReply(Reply):
    subject: ClassVar[str] = "cb.rpc.capture.reply"
    study_id: str | None = None
    study_instance_uid: str | None = None
    previous_study_instance_uid: str | None = None


class CatalogDeleteMedia(Request):
    """Delete a media item of a study (the operator confirmed it): it is no longer listed,
    converted or exported; the file stays until the study is purged."""

    subject: ClassVar[str] = "cb.rpc.capture.catalog.delete_media"
    media_id: str
    by: str | None = None


class CatalogDeleteMediaReply(Reply):
    subject: ClassVar[str] = "cb.rpc.capture.reply"
    #: False when there is no such media item, or it was deleted before.
    deleted: bool = False
    study_id: str | None = None


class CatalogAddMedia(Request):
    """Register a media item that did not come from a room's sources (a file added with "Add
    file"): the catalog writes its row and announces `media` exactly as for a capture. The file
    is at `media.rel_path` in the media store before this is asked. Asking again with the same
    media id is answered the same."""

    subject: ClassVar[str] = "cb.rpc.capture.catalog.add_media"
    media: MediaCaptured


class CatalogAddMediaReply(Reply):
    subject: ClassVar[str] = "cb.rpc.capture.reply"
    media_id: str | None = None


class NewStudyRecord(BaseModel):
    """A study's row as the catalog stores it (`studies`): the patient and study attributes of
    one of the ways a study begins (statement §4.1.3), checked at the door by the asker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    study_instance_uid: str
    origin: Literal["form", "worklist", "local", "unscheduled"]
    room: str | None = None
    patient_name: str = ""
    patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician: str = ""
    study_date: str = ""
    study_time: str = ""
    modality: str = ""
    #: The worklist item as DICOM JSON (statement Table 38), for the converter.
    worklist_item: dict[str, Any] | None = None


class CatalogCreateStudy(Request):
    """Create a study (form, worklist item, local study, unscheduled): its row and
    `cb.evt.study.changed` (created), in one transaction. The id is the asker's, so asking again
    is answered the same; a Study Instance UID another study holds is refused (`conflict`)."""

    subject: ClassVar[str] = "cb.rpc.capture.catalog.create_study"
    study: NewStudyRecord
    by: str | None = None


class CatalogCreateStudyReply(Reply):
    subject: ClassVar[str] = "cb.rpc.capture.reply"
    study_id: str | None = None
    #: Refused because another study holds the Study Instance UID (a worklist item begun twice).
    conflict: bool = False


class CatalogEditStudy(Request):
    """Apply a manual edit (statement §8.1.5) that the asker computed from the study's row as
    it read it at `read_at` (the row's `updated_at`): refused as `stale` when the row changed
    since, so that the edit is computed again from what it is now. `changes` maps columns of
    the patient and study attributes (and `study_instance_uid`, `edited`, `worklist_item`,
    which an edit may only clear) to their new values."""

    subject: ClassVar[str] = "cb.rpc.capture.catalog.edit_study"
    study_id: str
    changes: dict[str, str | bool | None]
    read_at: dt.datetime
    by: str | None = None


class CatalogEditStudyReply(Reply):
    subject: ClassVar[str] = "cb.rpc.capture.reply"
    #: False for an unknown study.
    found: bool = True
    #: The row changed after `read_at`: nothing was written.
    stale: bool = False


class CatalogDropEmptyStudy(Request):
    """Remove a study that holds no media (begun for a room that did not take it)."""

    subject: ClassVar[str] = "cb.rpc.capture.catalog.drop_empty_study"
    study_id: str
    by: str | None = None


class CatalogDropEmptyStudyReply(Reply):
    subject: ClassVar[str] = "cb.rpc.capture.reply"
    #: False for an unknown study or one that holds media (it stays).
    dropped: bool = False
