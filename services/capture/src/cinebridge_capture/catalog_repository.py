"""SQL of the study catalog's requests: what other services ask of `studies` and `media`, which
capture owns (docs/architecture.md, "The study catalog belongs to capture")."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal

import asyncpg
from cinebridge_common.dicom_values import valid_value
from cinebridge_common.messages import MediaCaptured, StudyChanged, WorklistItem
from cinebridge_common.outbox import enqueue
from cinebridge_common.uids import is_valid_uid

from .repository import StudyNotFound, insert_media

# Statement Table 38: the study takes the item's identity; Study ID ← Requested Procedure ID,
# Study Description ← Requested Procedure Description. A reconciled study is no longer "edited"
# (§8.1.5): the item's "New" attributes apply again.
_RECONCILE = """
UPDATE studies SET study_instance_uid = $2, origin = 'worklist', patient_name = $3,
    patient_id = $4, patient_birth_date = $5, patient_sex = $6, accession_number = $7,
    study_id = $8, study_description = $9, referring_physician = $10, worklist_item = $11,
    modality = $12, edited = false, updated_at = now()
WHERE id = $1"""


class ReconcileError(ValueError):
    """The study cannot take this worklist item (says which study and why)."""


@dataclass(frozen=True)
class Reconciled:
    study_id: str
    study_instance_uid: str
    previous_study_instance_uid: str


async def reconcile_study(
    pool: asyncpg.Pool, study_id: str, item: WorklistItem, by: str
) -> Reconciled:
    """The study takes the item's Study Instance UID and Table 38 data, with its event."""
    try:
        study_uuid = uuid.UUID(study_id)
    except ValueError:
        raise ReconcileError(f"study id {study_id!r} is not a UUID") from None
    uid, modality = item.study_instance_uid or "", item.modality or ""
    if not is_valid_uid(uid):
        raise ReconcileError(f"the worklist item has no valid Study Instance UID: {uid!r}")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT study_instance_uid, origin FROM studies WHERE id = $1 FOR UPDATE", study_uuid
        )
        if row is None:
            raise ReconcileError(f"study {study_id} does not exist")
        previous = str(row["study_instance_uid"])
        if row["origin"] == "worklist" and previous != uid:
            raise ReconcileError(f"study {study_id} is already linked to worklist study {previous}")
        holder = await conn.fetchval(
            "SELECT id FROM studies WHERE study_instance_uid = $1 AND id <> $2", uid, study_uuid
        )
        if holder is not None:
            raise ReconcileError(f"study {holder} already has Study Instance UID {uid}")
        await conn.execute(
            _RECONCILE,
            study_uuid,
            uid,
            item.patient_name or "",
            item.patient_id or "",
            item.patient_birth_date or "",
            item.patient_sex or "",
            item.accession_number or "",
            item.requested_procedure_id or "",
            item.requested_procedure_description or "",
            item.referring_physician_name or "",
            item.dataset,
            modality if valid_value("CS", modality) else "",
        )
        event = StudyChanged(study_id=study_id, change="reconciled", by=by)
        await enqueue(conn, event, msg_id=f"study-reconciled:{study_id}:{uid}")
    return Reconciled(study_id, uid, previous)


async def delete_media(pool: asyncpg.Pool, media_id: uuid.UUID) -> uuid.UUID | None:
    """Mark a media item deleted; its study's id, or None when it is unknown or gone already."""
    study: uuid.UUID | None = await pool.fetchval(
        "UPDATE media SET state = 'deleted' WHERE id = $1 AND state <> 'deleted' "
        "RETURNING study_id",
        media_id,
    )
    return study


async def mark_saved(pool: asyncpg.Pool, study_id: uuid.UUID) -> bool:
    """Record that the study was saved; False for a study that does not exist. Idempotent."""
    result = await pool.execute(
        "UPDATE studies SET state = 'saved', updated_at = now() WHERE id = $1", study_id
    )
    return str(result).endswith(" 1")


async def add_media(pool: asyncpg.Pool, event: MediaCaptured) -> None:
    """The media row and its MediaCaptured, as for a capture; nothing when the row exists (the
    same request asked again)."""
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM media WHERE id = $1", uuid.UUID(event.media_id)):
            return
        if not await conn.fetchval(
            "SELECT 1 FROM studies WHERE id = $1", uuid.UUID(event.study_id)
        ):
            raise StudyNotFound(f"study {event.study_id} does not exist")
        await insert_media(conn, event)


ConversionState = Literal["converting", "converted", "failed"]

#: The states a media item may come from, by the conversion state an event reports. An item
#: converted before stays converted while another conversion of it runs (a Save with other
#: options); `deleted` is final.
_CONVERSION_FROM: dict[str, list[str]] = {
    "converting": ["captured", "failed"],
    "converted": ["captured", "converting", "failed", "converted"],
    "failed": ["captured", "converting", "failed", "converted"],
}


async def record_conversion(
    pool: asyncpg.Pool,
    media_id: uuid.UUID,
    state: ConversionState,
    error: str | None,
    occurred_at: dt.datetime,
) -> bool:
    """Set the item's state from a converter event that occurred at `occurred_at`; False when
    the item is unknown or deleted, or a later event set its state already."""
    result = await pool.execute(
        """UPDATE media SET state = $2, error = $3, state_changed_at = $4
           WHERE id = $1 AND state = ANY($5::text[])
             AND (state_changed_at IS NULL OR state_changed_at <= $4)""",
        media_id,
        state,
        error,
        occurred_at,
        _CONVERSION_FROM[state],
    )
    return str(result).endswith(" 1")
