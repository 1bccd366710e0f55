"""Response shapes of the studies API (documented in the OpenAPI schema)."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel


class StudyOut(BaseModel):
    id: uuid.UUID
    study_instance_uid: str
    origin: str
    room: str | None
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician: str
    study_date: str
    study_time: str
    edited: bool
    state: str
    created_at: dt.datetime
    updated_at: dt.datetime
    #: (0008,0060) the instances carry: the procedure's (worklist) or the operator's.
    modality: str = ""
    status: str | None = None
    media_count: int | None = None
    #: A local study that the station's own SCP received back (one row, not a second study).
    received_back: bool = False
    #: Storage Commitment of the study at the destinations that require it (one badge):
    #: sent (not asked yet), requested, committed, commit-failed, unsupported; None: none.
    commitment: str | None = None
    #: The delivery ledger (docs/purge.md): captured, converted, sent, committed, purgeable,
    #: purged; None while the sender does not answer (and in a search not asked `ledger=true`).
    ledger: str | None = None


class Accepted(BaseModel):
    accepted: int
    job_keys: list[str] = []


class ConversionReport(BaseModel):
    stage: str  # transcode, remux, write
    fraction: float  # 0 to 1


class MediaOut(BaseModel):
    id: uuid.UUID
    study_id: uuid.UUID
    room: str
    source: str
    kind: str
    size: int
    mime: str
    width: int | None
    height: int | None
    frames: int | None
    duration_s: float | None
    fps: float | None
    codec: str | None
    state: str
    error: str | None
    captured_at: dt.datetime
    content_url: str
    #: The item's ledger state (the study detail): captured, converted, sent, committed,
    #: purgeable, purged; and each destination's (sent, requested, committed, commit-failed,
    #: unsupported, or the delivery's state while not sent).
    ledger: str | None = None
    destinations: dict[str, str] = {}
    #: When the purge policy removed its file (docs/purge.md).
    purged_at: dt.datetime | None = None
    #: The converter's latest report while the item is converted: {"stage", "fraction"}.
    progress: ConversionReport | None = None


class DeliveryOut(BaseModel):
    id: uuid.UUID
    instance_id: uuid.UUID
    destination_id: uuid.UUID
    destination_name: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    updated_at: dt.datetime
    delivered_at: dt.datetime | None
    sop_instance_uid: str
    sop_class_uid: str
    #: The captured item the instance was made from (none for instances received elsewhere).
    media_id: uuid.UUID | None = None
    #: Storage Commitment at a destination that requires it (PS3.4 Annex J): requested,
    #: committed, failed, unsupported; None: not asked (yet, or not required).
    commitment: str | None = None
    commitment_reason: str | None = None


class MppsOut(BaseModel):
    """The study's Modality Performed Procedure Step (PS3.4 Annex F) as the RIS was told."""

    id: uuid.UUID
    server_id: str
    sop_instance_uid: str
    pps_id: str
    #: pending-create, in-progress, pending-set, completed, discontinued, failed-retrying, failed
    state: str
    final_status: str | None = None
    #: The CID 9300 discontinuation reason: {"value", "scheme", "meaning"}.
    reason: dict[str, str] | None = None
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    updated_at: dt.datetime


class StudyDetail(StudyOut):
    #: What the purge policy will do with the study's local data (docs/purge.md): purged,
    #: purging, held, kept-uncommitted, policy-off, scheduled (at `purge_at`).
    held: bool | None = None
    purge: str | None = None
    purge_at: dt.datetime | None = None
    purged_at: dt.datetime | None = None
    media: list[MediaOut] = []
    deliveries: list[DeliveryOut] = []
    mpps: MppsOut | None = None
