"""The gateway's SQL on the study catalog (`studies`, `media`), which capture owns.

Reads only: the tables are the catalog's published read model; every change is asked of
capture's catalog RPCs (docs/architecture.md, "The study catalog belongs to capture").
"""

from __future__ import annotations

import uuid

import asyncpg


async def served_rooms(pool: asyncpg.Pool) -> list[str]:
    """Rooms a capture process has served (capture's read model `capture_served_rooms`)."""
    return [r["room"] for r in await pool.fetch("SELECT room FROM capture_served_rooms")]


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
