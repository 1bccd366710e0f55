"""SQL of the converter's half of a purge (docs/purge.md): the study's DICOM files still on
disk, and their rows marked purged with the report to capture in the same transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg
from cinebridge_common.messages.purge import InstancesPurged, PurgeStudyFiles
from cinebridge_common.outbox import enqueue
from cinebridge_common.replay import LostWork, body_uuid


@dataclass(frozen=True)
class DicomFile:
    instance_id: uuid.UUID
    rel_path: str


async def unpurged_files(
    pool: asyncpg.Pool, study_id: uuid.UUID, made_by: dt.datetime | None
) -> list[DicomFile]:
    """The study's DICOM files not purged yet, made by `made_by` (None: any)."""
    rows = await pool.fetch(
        """SELECT id, rel_path FROM instances
           WHERE study_id = $1 AND purged_at IS NULL
             AND ($2::timestamptz IS NULL OR created_at <= $2)""",
        study_id,
        made_by,
    )
    return [DicomFile(r["id"], r["rel_path"]) for r in rows]


async def mark_purged(
    pool: asyncpg.Pool, study_id: uuid.UUID, removed: list[DicomFile]
) -> InstancesPurged:
    """Mark the removed files' rows and announce the study's totals (every instance purged so
    far: a repeated job reports the same), in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE instances SET purged_at = now() WHERE id = ANY($1::uuid[]) "
            "AND purged_at IS NULL",
            [f.instance_id for f in removed],
        )
        row = await conn.fetchrow(
            """SELECT count(*) AS n, coalesce(sum(size), 0)::bigint AS bytes FROM instances
               WHERE study_id = $1 AND purged_at IS NOT NULL""",
            study_id,
        )
        assert row is not None  # an aggregate always answers one row
        event = InstancesPurged(
            study_id=str(study_id), instances=int(row["n"]), bytes=int(row["bytes"])
        )
        await enqueue(conn, event, msg_id=f"instances-purged:{study_id}")
    return event


_STUDY = body_uuid("study_id")
#: The purge job lost with NATS's JetStream store (cinebridge_common.replay): done once every
#: file of the study made by the purge's start is marked purged, which `mark_purged` records with
#: its report to capture in one transaction (by `instances_study`), or when the id is not one.
#: A study without instances has no row to tell; its job is published again, and its repeated
#: report (the same totals, the same message id) changes nothing.
LOST_WORK = [
    LostWork(
        stream="CB_JOBS",
        subject=PurgeStudyFiles.subject,
        done=f"""{_STUDY} IS NULL
            OR (EXISTS (SELECT 1 FROM instances i WHERE i.study_id = {_STUDY}
                        AND i.purged_at IS NOT NULL)
                AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.study_id = {_STUDY}
                                AND i.purged_at IS NULL
                                AND (body->>'started_at' IS NULL
                                     OR i.created_at <= (body->>'started_at')::timestamptz)))""",
    )
]
