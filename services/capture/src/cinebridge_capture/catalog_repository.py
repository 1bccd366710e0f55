"""SQL of the study catalog's requests: what other services ask of `studies` and `media`, which
capture owns (docs/architecture.md, "The study catalog belongs to capture")."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Literal

import asyncpg
from cinebridge_common.dicom_values import valid_value
from cinebridge_common.messages import (
    ConversionFailed,
    InstanceCreated,
    MediaCaptured,
    NewStudyRecord,
    StudyChanged,
    StudySaved,
    WorklistItem,
)
from cinebridge_common.outbox import enqueue
from cinebridge_common.replay import LostWork, body_uuid
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


#: A converter outcome is applied once the item's state was set by it or a later event, or the
#: item is gone (an instance handed in by `cinebridge send` has no media item).
_OUTCOME_APPLIED = f"""NOT EXISTS (
    SELECT 1 FROM media m WHERE m.id = {body_uuid("media_id")} AND m.state <> 'deleted'
      AND (m.state_changed_at IS NULL
           OR m.state_changed_at < (body->>'occurred_at')::timestamptz))"""

#: Events the catalog applies, lost with NATS's JetStream store (`cinebridge_common.replay`).
LOST_WORK = [
    LostWork(stream="CB_EVENTS", subject=InstanceCreated.subject, done=_OUTCOME_APPLIED),
    LostWork(stream="CB_EVENTS", subject=ConversionFailed.subject, done=_OUTCOME_APPLIED),
    LostWork(
        stream="CB_EVENTS",
        subject=StudySaved.subject,
        done=f"""NOT EXISTS (SELECT 1 FROM studies s WHERE s.id = {body_uuid("study_id")}
                            AND s.state <> 'saved')""",
    ),
]


class StudyConflict(ValueError):
    """Another study holds the Study Instance UID."""


async def create_study(pool: asyncpg.Pool, study: NewStudyRecord, by: str) -> None:
    """The study's row and its StudyChanged, in one transaction; nothing when this study exists
    with this UID already (the same request asked again)."""
    values = study.model_dump()
    study_uuid = uuid.UUID(values.pop("id"))
    if not is_valid_uid(study.study_instance_uid):
        raise ValueError(f"not a valid Study Instance UID: {study.study_instance_uid[:80]!r}")
    async with pool.acquire() as conn, conn.transaction():
        holder = await conn.fetchval(
            "SELECT id FROM studies WHERE study_instance_uid = $1", study.study_instance_uid
        )
        if holder == study_uuid:
            return
        if holder is not None:
            raise StudyConflict(f"study {holder} has Study Instance UID {study.study_instance_uid}")
        columns = ", ".join(["id", *values])
        params = ", ".join(f"${i}" for i in range(1, len(values) + 2))
        try:
            await conn.execute(
                f"INSERT INTO studies ({columns}) VALUES ({params})", study_uuid, *values.values()
            )
        except asyncpg.UniqueViolationError as exc:  # the same UID or id, committed meanwhile
            raise StudyConflict(str(exc)) from None
        event = StudyChanged(study_id=study.id, change="created", by=by)
        await enqueue(conn, event, msg_id=f"study-created-{study.id}")


#: The columns a manual edit may change (statement §8.1.5): the patient and study attributes,
#: a new Study Instance UID unlinking the study from the worklist, `edited`, and
#: `worklist_item`, which an edit may only clear.
EDITABLE = frozenset(
    {
        "patient_name",
        "patient_id",
        "patient_birth_date",
        "patient_sex",
        "accession_number",
        "study_description",
        "referring_physician",
        "modality",
        "study_instance_uid",
        "edited",
        "worklist_item",
    }
)


def _check_edit(changes: dict[str, str | bool | None]) -> None:
    if unknown := sorted(set(changes) - EDITABLE):
        raise ValueError(f"not an editable study attribute: {', '.join(unknown)}")
    if changes.get("worklist_item", None) is not None:
        raise ValueError("an edit may only clear the worklist item")
    uid = changes.get("study_instance_uid")
    if "study_instance_uid" in changes and not (isinstance(uid, str) and is_valid_uid(uid)):
        raise ValueError(f"not a valid Study Instance UID: {str(uid)[:80]!r}")
    if not isinstance(changes.get("edited", True), bool):
        raise ValueError("edited is true or false")


@dataclass(frozen=True)
class Edited:
    found: bool
    stale: bool = False


async def edit_study(
    pool: asyncpg.Pool,
    study_id: uuid.UUID,
    changes: dict[str, str | bool | None],
    read_at: dt.datetime,
    by: str,
) -> Edited:
    """Apply an edit computed from the row as it was at `read_at`, with its StudyChanged; stale
    (nothing written) when the row changed since."""
    _check_edit(changes)
    async with pool.acquire() as conn, conn.transaction():
        updated_at = await conn.fetchval(
            "SELECT updated_at FROM studies WHERE id = $1 FOR UPDATE", study_id
        )
        if updated_at is None:
            return Edited(found=False)
        if updated_at != read_at:
            return Edited(found=True, stale=True)
        if not changes:
            return Edited(found=True)
        uid = changes.get("study_instance_uid")
        if uid and await conn.fetchval(
            "SELECT 1 FROM studies WHERE study_instance_uid = $1 AND id <> $2", uid, study_id
        ):
            raise StudyConflict(f"another study has Study Instance UID {uid}")
        sets = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
        await conn.execute(
            f"UPDATE studies SET {sets}, updated_at = now() WHERE id = $1",
            study_id,
            *changes.values(),
        )
        event = StudyChanged(study_id=str(study_id), change="edited", by=by)
        await enqueue(conn, event, msg_id=f"study-edited-{study_id}-{uuid.uuid4().hex}")
    return Edited(found=True)


async def drop_empty_study(pool: asyncpg.Pool, study_id: uuid.UUID) -> bool:
    """Remove a study no media is attached to; False when it holds media or is unknown."""
    result = await pool.execute(
        "DELETE FROM studies s WHERE s.id = $1 AND NOT EXISTS "
        "(SELECT 1 FROM media m WHERE m.study_id = s.id)",
        study_id,
    )
    return str(result).endswith(" 1")
