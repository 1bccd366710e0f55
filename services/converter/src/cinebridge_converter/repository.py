"""All SQL of the converter: media/study loading, number reservation, instance commit, and the
job in hand (leases, dead-lettered jobs, re-queues)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from cinebridge_common import outbox
from cinebridge_common.messages import ConversionFailed, ConvertMedia, InstanceCreated
from cinebridge_common.replay import LostWork, body_uuid

from .mwl import StudyInfo

MediaRow = asyncpg.Record


@dataclass(frozen=True)
class NewInstance:
    """One committed instance (what the row and the InstanceCreated event say)."""

    id: str
    part: int
    parts: int
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    series_instance_uid: str
    series_number: int
    instance_number: int
    rel_path: str
    size: int
    sha256: str
    rows: int
    columns: int
    frames: int | None
    transcoded: bool
    note: str | None


async def load_media(pool: asyncpg.Pool, media_id: str) -> MediaRow | None:
    return await pool.fetchrow("SELECT * FROM media WHERE id = $1", uuid.UUID(media_id))


async def load_study(pool: asyncpg.Pool, study_id: uuid.UUID) -> StudyInfo | None:
    row = await pool.fetchrow("SELECT * FROM studies WHERE id = $1", study_id)
    if row is None:
        return None
    return StudyInfo(
        id=str(row["id"]),
        study_instance_uid=row["study_instance_uid"],
        origin=row["origin"],
        patient_name=row["patient_name"],
        patient_id=row["patient_id"],
        patient_birth_date=row["patient_birth_date"],
        patient_sex=row["patient_sex"],
        accession_number=row["accession_number"],
        study_id=row["study_id"],
        study_description=row["study_description"],
        referring_physician=row["referring_physician"],
        study_date=row["study_date"],
        study_time=row["study_time"],
        worklist_item=row["worklist_item"],
        edited=row["edited"],
        created_at=row["created_at"],
        modality=row.get("modality") or "",
    )


async def instance_exists(pool: asyncpg.Pool, sop_instance_uid: str) -> bool:
    """Whether a conversion already committed (all parts of one commit together)."""
    found = await pool.fetchval(
        "SELECT 1 FROM instances WHERE sop_instance_uid = $1", sop_instance_uid
    )
    return found is not None


async def reserve_numbers(
    pool: asyncpg.Pool, media_id: str, study_id: uuid.UUID, source: str, key: str, parts: int
) -> tuple[int, int]:
    """(series number, first instance number) for this conversion; the same on redelivery."""
    media = uuid.UUID(media_id)
    async with pool.acquire() as conn, conn.transaction():
        # One study's numbering is serialised; other studies go on in parallel.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1::text))", str(study_id))
        found = await conn.fetchrow(
            """SELECT series_number, first_instance FROM converter_reservations
               WHERE media_id = $1 AND conversion_key = $2 AND parts = $3""",
            media,
            key,
            parts,
        )
        if found is not None:
            return int(found["series_number"]), int(found["first_instance"])
        series = await conn.fetchval(
            """INSERT INTO converter_series (study_id, source, series_number)
               VALUES ($1, $2, (SELECT coalesce(max(series_number), 0) + 1
                                FROM converter_series WHERE study_id = $1))
               ON CONFLICT (study_id, source) DO UPDATE SET source = EXCLUDED.source
               RETURNING series_number""",
            study_id,
            source,
        )
        last = await conn.fetchval(
            """INSERT INTO converter_study_counters (study_id, last_instance) VALUES ($1, $2)
               ON CONFLICT (study_id) DO UPDATE
                 SET last_instance = converter_study_counters.last_instance + $2
               RETURNING last_instance""",
            study_id,
            parts,
        )
        first = int(last) - parts + 1
        await conn.execute(
            """INSERT INTO converter_reservations
                 (media_id, conversion_key, parts, series_number, first_instance)
               VALUES ($1, $2, $3, $4, $5)""",
            media,
            key,
            parts,
            series,
            first,
        )
        return int(series), first


async def insert_instance(conn: Any, media: MediaRow, item: NewInstance) -> bool:
    """Insert the row; False when another delivery of the same job committed it first."""
    inserted = await conn.fetchval(
        """INSERT INTO instances (id, sop_instance_uid, media_id, part, parts, study_id,
             study_instance_uid, series_instance_uid, sop_class_uid, transfer_syntax_uid,
             series_number, instance_number, rel_path, size, sha256, rows, columns, frames,
             transcoded, note)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)
           ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING id""",
        uuid.UUID(item.id),
        item.sop_instance_uid,
        media["id"],
        item.part,
        item.parts,
        media["study_id"],
        item.study_instance_uid,
        item.series_instance_uid,
        item.sop_class_uid,
        item.transfer_syntax_uid,
        item.series_number,
        item.instance_number,
        item.rel_path,
        item.size,
        item.sha256,
        item.rows,
        item.columns,
        item.frames,
        item.transcoded,
        item.note,
    )
    return inserted is not None


async def announce(
    conn: Any, media: MediaRow, sop_instance_uids: Sequence[str], auto_send: bool
) -> list[InstanceCreated]:
    """InstanceCreated for each new row and the job's outcome `converted`, in the caller's
    transaction. The catalog (capture) sets `media.state` from the events."""
    events = []
    for uid in sop_instance_uids:
        row = await conn.fetchrow(
            """SELECT i.*, m.source FROM instances i JOIN media m ON m.id = i.media_id
               WHERE i.sop_instance_uid = $1""",
            uid,
        )
        event = instance_event(row, auto_send)
        await outbox.enqueue(conn, event, msg_id=f"instance-created-{uid}")
        events.append(event)
    await finish_job(conn, media["id"])
    return events


def instance_event(row: Any, auto_send: bool) -> InstanceCreated:
    return InstanceCreated(
        instance_id=str(row["id"]),
        media_id=str(row["media_id"]),
        study_id=str(row["study_id"]),
        sop_instance_uid=row["sop_instance_uid"],
        sop_class_uid=row["sop_class_uid"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        rel_path=row["rel_path"],
        size=int(row["size"]),
        sha256=row["sha256"],
        auto_send=auto_send,
        series_instance_uid=row["series_instance_uid"],
        # The Series Description the converter wrote (dicomize: the source's name, 64 chars).
        series_description=str(row.get("source") or "")[:64],
        part=int(row["part"]),
        parts=int(row["parts"]),
    )


async def record_failure(pool: asyncpg.Pool, job: ConvertMedia, reason: str) -> None:
    """The job's outcome `failed` with the reason, and ConversionFailed, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await fail_in(conn, job, reason, f"conversion-failed-{job.job_key}")


async def fail_in(conn: Any, job: ConvertMedia, reason: str, msg_id: str) -> None:
    """Record the job failed and announce it, in the caller's transaction; the job is done.
    The row is written even for a job that never started, so that its dead letter is not
    parked and tried again."""
    event = ConversionFailed(media_id=job.media_id, study_id=job.study_id, reason=reason)
    await conn.execute(
        """INSERT INTO converter_jobs (media_id, job, lease_until, outcome, last_error)
           VALUES ($1, $2, now(), 'failed', $3)
           ON CONFLICT (media_id) DO UPDATE
             SET outcome = 'failed', last_error = EXCLUDED.last_error, updated_at = now()""",
        uuid.UUID(job.media_id),
        job.model_dump(mode="json"),
        reason[:2000],
    )
    await outbox.enqueue(conn, event, msg_id=msg_id)


async def finish_job(conn: Any, media_id: uuid.UUID) -> None:
    """The job's outcome `converted` (a job that is not in hand has no row: nothing to do)."""
    await conn.execute(
        """UPDATE converter_jobs SET outcome = 'converted', last_error = NULL, updated_at = now()
           WHERE media_id = $1""",
        media_id,
    )


# -- the job in hand (converter_jobs): leases, parking, reconciliation -------------------------
async def start_job(pool: asyncpg.Pool, job: ConvertMedia, lease_s: float) -> None:
    """The job in hand with its lease: while the lease runs a converter holds the job; once it
    ran out, the reconciler finds the row and re-queues it. A media item finished before (a
    Save after a failure, or with other options) starts afresh: no outcome, no re-queues."""
    await pool.execute(
        """INSERT INTO converter_jobs (media_id, job, lease_until)
           VALUES ($1, $2, now() + make_interval(secs => $3))
           ON CONFLICT (media_id) DO UPDATE
             SET job = EXCLUDED.job, lease_until = EXCLUDED.lease_until, updated_at = now(),
                 requeues = CASE WHEN converter_jobs.outcome IS NULL
                                 THEN converter_jobs.requeues ELSE 0 END,
                 outcome = NULL""",
        uuid.UUID(job.media_id),
        job.model_dump(mode="json"),
        lease_s,
    )


async def renew_lease(pool: asyncpg.Pool, media_id: str, lease_s: float) -> None:
    await pool.execute(
        """UPDATE converter_jobs SET lease_until = now() + make_interval(secs => $2),
                  updated_at = now() WHERE media_id = $1""",
        uuid.UUID(media_id),
        lease_s,
    )


async def park_job(pool: asyncpg.Pool, job: ConvertMedia, reason: str) -> bool:
    """A dead-lettered job of a media item this converter has not finished (no outcome yet):
    hand it to the reconciler at once (lease already over). False when there is nothing left
    to do: the job converted or failed, or the item was deleted."""
    done = await pool.fetchval(
        """INSERT INTO converter_jobs (media_id, job, lease_until, last_error)
           SELECT id, $2, now(), $3 FROM media WHERE id = $1 AND state <> 'deleted'
           ON CONFLICT (media_id) DO UPDATE
             SET lease_until = now(), last_error = EXCLUDED.last_error, updated_at = now()
             WHERE converter_jobs.outcome IS NULL
           RETURNING 1""",
        uuid.UUID(job.media_id),
        job.model_dump(mode="json"),
        reason[:2000],
    )
    return done is not None


async def lapsed_jobs(conn: Any, limit: int) -> list[asyncpg.Record]:
    """Unfinished jobs whose lease ran out (no converter holds them), locked for this
    reconciler pass, with the catalog's state of their media (`deleted` ends a job)."""
    return list(
        await conn.fetch(
            """SELECT j.media_id, j.job, j.requeues, j.last_error, m.state
               FROM converter_jobs j JOIN media m ON m.id = j.media_id
               WHERE j.outcome IS NULL AND j.lease_until < now() ORDER BY j.lease_until
               LIMIT $1 FOR UPDATE OF j SKIP LOCKED""",
            limit,
        )
    )


async def requeue(conn: Any, job: ConvertMedia, lease_s: float) -> None:
    """The job again, under a new message id (JetStream would drop the old one as a duplicate
    within its window), with a fresh lease so it is not re-queued twice."""
    await outbox.enqueue(conn, job, msg_id=f"convert-{job.job_key}-requeue-{uuid.uuid4().hex}")
    await conn.execute(
        """UPDATE converter_jobs SET requeues = requeues + 1, updated_at = now(),
                  lease_until = now() + make_interval(secs => $2) WHERE media_id = $1""",
        uuid.UUID(job.media_id),
        lease_s,
    )


async def drop_job(conn: Any, media_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM converter_jobs WHERE media_id = $1", media_id)


#: Convert jobs lost with NATS's JetStream store (`cinebridge_common.replay`): a job's work is
#: done once a converter took it in hand after it was asked (its `converter_jobs` row, which
#: the reconciler looks after from then on), or when its media item is gone.
LOST_WORK = [
    LostWork(
        stream="CB_JOBS",
        subject=ConvertMedia.subject,
        done=f"""EXISTS (SELECT 1 FROM converter_jobs j WHERE j.media_id = {body_uuid("media_id")}
                           AND j.updated_at >= o.created_at)
                 OR NOT EXISTS (SELECT 1 FROM media m WHERE m.id = {body_uuid("media_id")}
                                AND m.state <> 'deleted')""",
    )
]


# -- exports -----------------------------------------------------------------------------
async def export_media(pool: asyncpg.Pool, study_id: uuid.UUID) -> list[asyncpg.Record]:
    """The study's media items in capture order (an export's MP4/JPEG files)."""
    return await pool.fetch(
        "SELECT id, kind, rel_path, source FROM media WHERE study_id = $1 AND state <> 'deleted'"
        " ORDER BY captured_at, id",
        study_id,
    )


async def export_instances(pool: asyncpg.Pool, study_id: uuid.UUID) -> list[asyncpg.Record]:
    """The study's DICOM instances, series by series (an export's DICOM media)."""
    return await pool.fetch(
        """SELECT i.rel_path FROM instances i JOIN media m ON m.id = i.media_id
           WHERE i.study_id = $1 AND m.state <> 'deleted'
           ORDER BY i.series_number, i.instance_number, i.part""",
        study_id,
    )
