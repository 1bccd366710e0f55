"""The gateway's SQL on the study catalog (`studies`, `media`), which capture owns.

Reads use the tables as the catalog's published read model. The write here (an empty study
dropped again) is one still to move behind capture's catalog RPCs (docs/architecture.md,
tests/architecture/owners.py); it sits in this module so that the move starts in one place.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg


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
