"""The gateway's SQL on the study catalog (`studies`, `media`), which capture owns.

Reads use the tables as the catalog's published read model. The writes here (an empty study
dropped again, an uploaded file's media row) are the ones still to move behind
capture's catalog RPCs (docs/architecture.md, tests/architecture/owners.py); they sit in this
one module so that the move has one place to start from.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from cinebridge_common.messages import MediaCaptured


async def served_rooms(pool: asyncpg.Pool) -> list[str]:
    """Rooms a capture process has served (capture's `capture_rooms`)."""
    return [r["room"] for r in await pool.fetch("SELECT room FROM capture_rooms")]


async def study_summary(pool: asyncpg.Pool, study_id: uuid.UUID) -> asyncpg.Record | None:
    """The few fields a room shows of its current study, and how many media items it holds."""
    row: asyncpg.Record | None = await pool.fetchrow(
        """SELECT s.id, s.study_instance_uid, s.origin, s.edited, s.modality, s.patient_name,
                  s.patient_id, s.patient_birth_date, s.accession_number,
                  (SELECT count(*) FROM media m
                    WHERE m.study_id = s.id AND m.state <> 'deleted') AS media_count
           FROM studies s WHERE s.id = $1""",
        study_id,
    )
    return row


async def uid_taken(conn: Any, uid: str) -> bool:
    found = await conn.fetchval("SELECT 1 FROM studies WHERE study_instance_uid = $1", uid)
    return bool(found)


async def lock_study(conn: Any, study_id: uuid.UUID) -> asyncpg.Record | None:
    """The study row, locked until the caller's transaction ends (an edit reads, then writes)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM studies WHERE id = $1 FOR UPDATE", study_id
    )
    return row


async def drop_if_empty(pool: asyncpg.Pool, study_id: uuid.UUID) -> None:
    """Remove a study no media is attached to (a room refused to make it current)."""
    await pool.execute(
        "DELETE FROM studies s WHERE s.id = $1 AND NOT EXISTS "
        "(SELECT 1 FROM media m WHERE m.study_id = s.id)",
        study_id,
    )


async def insert_uploaded_media(conn: Any, event: MediaCaptured) -> None:
    """An uploaded file's media row, as capture writes a captured one (no `recovered`)."""
    await conn.execute(
        """INSERT INTO media (id, study_id, room, source, kind, rel_path, size, sha256, mime,
                              width, height, frames, duration_s, fps, codec)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)""",
        uuid.UUID(event.media_id),
        uuid.UUID(event.study_id),
        event.room,
        event.source,
        event.kind,
        event.rel_path,
        event.size,
        event.sha256,
        event.mime,
        event.width,
        event.height,
        event.frames,
        event.duration_s,
        event.fps,
        event.codec,
    )
