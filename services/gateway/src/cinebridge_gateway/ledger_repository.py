"""Reads of the delivery ledger (docs/purge.md "Ledger"): what the catalog (capture: `studies`,
`media`, and its read model `capture_purging_studies`) and the converter (its read model
`converted_instances`) say of each study. Reads only, through the owners' read models
(docs/architecture.md)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class LocalStudy:
    study_id: str
    held: bool
    purged_at: dt.datetime | None
    purging: bool
    media: int
    converted: int
    instances: int


async def local_studies(pool: asyncpg.Pool, study_ids: list[uuid.UUID]) -> list[LocalStudy]:
    rows = await pool.fetch(
        """SELECT s.id, s.held, s.purged_at,
                  EXISTS (SELECT 1 FROM capture_purging_studies p
                          WHERE p.study_id = s.id) AS purging,
                  (SELECT count(*) FROM media m
                   WHERE m.study_id = s.id AND m.state <> 'deleted') AS media,
                  (SELECT count(*) FROM media m
                   WHERE m.study_id = s.id AND m.state = 'converted') AS converted,
                  (SELECT count(*) FROM converted_instances i WHERE i.study_id = s.id) AS instances
           FROM studies s WHERE s.id = ANY($1::uuid[])""",
        study_ids,
    )
    return [
        LocalStudy(
            str(r["id"]),
            r["held"],
            r["purged_at"],
            r["purging"],
            r["media"],
            r["converted"],
            r["instances"],
        )
        for r in rows
    ]


async def unpurged_study_ids(pool: asyncpg.Pool, limit: int) -> list[uuid.UUID]:
    rows = await pool.fetch(
        "SELECT id FROM studies WHERE purged_at IS NULL ORDER BY created_at DESC LIMIT $1", limit
    )
    return [r["id"] for r in rows]


async def purged_count(pool: asyncpg.Pool) -> int:
    n: int = await pool.fetchval("SELECT count(*) FROM studies WHERE purged_at IS NOT NULL")
    return n
