"""SQL of the local purge policy (docs/purge.md): the candidates, the purge journal
`capture_purges`, the hold of a study, and the marks a purge leaves on `studies` and `media`."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from cinebridge_common.messages.purge import (
    InstancesPurged,
    PurgeReason,
    PurgeStudyFiles,
    StudyPurged,
)
from cinebridge_common.outbox import enqueue
from cinebridge_common.replay import LostWork, body_uuid

#: Session advisory lock of the purge planner: one runner at a time across capture processes
#: (any of them may run it; a killed runner's session ends and frees the lock).
PURGE_LOCK = 0x43425055  # "CBPU"

# A study is a candidate once it was saved and every media item it keeps was converted: only
# then is everything captured for it on its way to the destinations (a media item still being
# converted would not yet be among the instances whose commitment the sender reports).
_CANDIDATES = """
SELECT s.id, s.study_instance_uid, s.created_at,
       coalesce(sum(m.size) FILTER (WHERE m.purged_at IS NULL), 0)::bigint AS bytes
FROM studies s JOIN media m ON m.study_id = s.id
WHERE s.purged_at IS NULL AND NOT s.held AND s.state = 'saved'
  AND NOT EXISTS (SELECT 1 FROM capture_purges p WHERE p.study_id = s.id)
  AND ($2::timestamptz IS NULL OR (s.created_at, s.id) > ($2, $3::uuid))
GROUP BY s.id
HAVING bool_and(m.state IN ('converted', 'deleted')) AND bool_or(m.state = 'converted')
ORDER BY s.created_at, s.id
LIMIT $1"""


@dataclass(frozen=True)
class Candidate:
    study_id: str
    study_instance_uid: str
    #: Bytes of the media files the purge would remove.
    media_bytes: int
    #: Where the next page of candidates starts (they come oldest first).
    created_at: dt.datetime | None = None


@dataclass(frozen=True)
class OpenPurge:
    study_id: uuid.UUID
    reason: PurgeReason
    media_removed: bool
    dicom_removed: bool


@dataclass(frozen=True)
class MediaFile:
    media_id: uuid.UUID
    rel_path: str
    size: int


@asynccontextmanager
async def planner_lock(pool: asyncpg.Pool) -> AsyncIterator[bool]:
    """True inside when this process holds the planner lock (then released on exit)."""
    async with pool.acquire() as conn:
        locked = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", PURGE_LOCK))
        try:
            yield locked
        finally:
            if locked:
                await conn.execute("SELECT pg_advisory_unlock($1)", PURGE_LOCK)


async def candidates(
    pool: asyncpg.Pool, limit: int, after: Candidate | None = None
) -> list[Candidate]:
    """Studies that may be purged once the sender lists them as committed, oldest first; the
    page after `after`."""
    at, last = (after.created_at, uuid.UUID(after.study_id)) if after else (None, None)
    rows = await pool.fetch(_CANDIDATES, limit, at, last)
    return [
        Candidate(str(r["id"]), r["study_instance_uid"], int(r["bytes"]), r["created_at"])
        for r in rows
    ]


async def instance_counts(pool: asyncpg.Pool, study_ids: list[str]) -> dict[str, int]:
    """How many instances the converter made per study (its read model `converted_instances`,
    docs/architecture.md)."""
    rows = await pool.fetch(
        """SELECT study_id, count(*) AS n FROM converted_instances
           WHERE study_id = ANY($1::uuid[]) GROUP BY study_id""",
        [uuid.UUID(s) for s in study_ids],
    )
    return {str(r["study_id"]): int(r["n"]) for r in rows}


async def held_count(pool: asyncpg.Pool) -> int:
    n: int = await pool.fetchval("SELECT count(*) FROM studies WHERE held AND purged_at IS NULL")
    return n


async def start_purge(pool: asyncpg.Pool, study_id: str, reason: PurgeReason) -> bool:
    """Journal the purge and queue the converter's job, in one transaction; False when the study
    was held (or purged) meanwhile. The sender listed it as committed before this is called."""
    sid = uuid.UUID(study_id)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT held, purged_at FROM studies WHERE id = $1 FOR UPDATE", sid
        )
        if row is None or row["held"] or row["purged_at"] is not None:
            return False
        started_at = await conn.fetchval(
            """INSERT INTO capture_purges (study_id, reason) VALUES ($1, $2)
               ON CONFLICT DO NOTHING RETURNING started_at""",
            sid,
            reason,
        )
        if started_at is None:
            return False
        job = PurgeStudyFiles(
            job_key=f"purge:{study_id}", study_id=study_id, reason=reason, started_at=started_at
        )
        await enqueue(conn, job, msg_id=job.job_key)
    return True


async def open_purges(pool: asyncpg.Pool) -> list[OpenPurge]:
    rows = await pool.fetch(
        """SELECT study_id, reason, media_removed_at, dicom_removed_at FROM capture_purges
           WHERE finished_at IS NULL ORDER BY started_at"""
    )
    return [
        OpenPurge(
            r["study_id"],
            r["reason"],
            r["media_removed_at"] is not None,
            r["dicom_removed_at"] is not None,
        )
        for r in rows
    ]


async def media_files(pool: asyncpg.Pool, study_id: uuid.UUID) -> list[MediaFile]:
    """Every media file of the study still on disk (deleted items' files too: they stayed) that
    was there when its purge started: one captured into the study later was never committed."""
    rows = await pool.fetch(
        """SELECT m.id, m.rel_path, m.size FROM media m
           JOIN capture_purges p ON p.study_id = m.study_id
           WHERE m.study_id = $1 AND m.purged_at IS NULL AND m.captured_at <= p.started_at""",
        study_id,
    )
    return [MediaFile(r["id"], r["rel_path"], int(r["size"])) for r in rows]


async def media_removed(pool: asyncpg.Pool, study_id: uuid.UUID, files: list[MediaFile]) -> None:
    """The files are gone: mark their rows and the journal, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE media SET purged_at = now() WHERE id = ANY($1::uuid[]) AND purged_at IS NULL",
            [f.media_id for f in files],
        )
        await conn.execute(
            """UPDATE capture_purges SET media_removed_at = now(),
                      media_files = media_files + $2, media_bytes = media_bytes + $3
               WHERE study_id = $1 AND media_removed_at IS NULL""",
            study_id,
            len(files),
            sum(f.size for f in files),
        )


async def dicom_removed(pool: asyncpg.Pool, study_id: uuid.UUID, instances: int, size: int) -> bool:
    """Record the converter's report; False when no purge of the study is journalled."""
    result = await pool.execute(
        """UPDATE capture_purges SET dicom_removed_at = coalesce(dicom_removed_at, now()),
                  instances = $2, instance_bytes = $3
           WHERE study_id = $1""",
        study_id,
        instances,
        size,
    )
    return str(result).endswith(" 1")


async def finish(pool: asyncpg.Pool, study_id: uuid.UUID) -> StudyPurged | None:
    """Mark the study purged and announce it, once both halves are done; None otherwise (or when
    it was finished before)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE capture_purges SET finished_at = now()
               WHERE study_id = $1 AND finished_at IS NULL
                 AND media_removed_at IS NOT NULL AND dicom_removed_at IS NOT NULL
               RETURNING reason, media_files, media_bytes, instances, instance_bytes""",
            study_id,
        )
        if row is None:
            return None
        uid = await conn.fetchval(
            """UPDATE studies SET purged_at = now(), updated_at = now() WHERE id = $1
               RETURNING study_instance_uid""",
            study_id,
        )
        event = StudyPurged(
            study_id=str(study_id),
            study_instance_uid=uid or "",
            reason=row["reason"],
            media_files=row["media_files"],
            media_bytes=row["media_bytes"],
            instances=row["instances"],
            instance_bytes=row["instance_bytes"],
        )
        await enqueue(conn, event, msg_id=f"study-purged:{study_id}")
    return event


@dataclass(frozen=True)
class Hold:
    found: bool
    held: bool = False
    #: A purge was started (or finished): holding the study keeps nothing any more.
    purged: bool = False


async def set_held(pool: asyncpg.Pool, study_id: uuid.UUID, held: bool, by: str | None) -> Hold:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE studies SET held = $2,
                      held_by = CASE WHEN $2 THEN $3 END, held_at = CASE WHEN $2 THEN now() END
               WHERE id = $1 RETURNING held""",
            study_id,
            held,
            by,
        )
        if row is None:
            return Hold(found=False)
        purging = await conn.fetchval("SELECT 1 FROM capture_purges WHERE study_id = $1", study_id)
    return Hold(found=True, held=bool(row["held"]), purged=purging is not None)


#: The converter's report lost with NATS's JetStream store (cinebridge_common.replay): done once
#: the study's purge journal has it, or when no purge of the study waits for it (none was
#: journalled, or the id is not one). By the journal's key, `capture_purges.study_id`.
LOST_WORK = [
    LostWork(
        stream="CB_EVENTS",
        subject=InstancesPurged.subject,
        done=f"""NOT EXISTS (SELECT 1 FROM capture_purges p
                             WHERE p.study_id = {body_uuid("study_id")}
                               AND p.dicom_removed_at IS NULL)""",
    )
]
