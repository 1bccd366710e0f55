"""All of capture's SQL: room study, unscheduled studies, media rows with their outbox event,
and the recordings-in-progress journal used for crash recovery."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg
from cinebridge_common.db import Connection
from cinebridge_common.messages.capture import MediaCaptured
from cinebridge_common.outbox import enqueue
from cinebridge_common.uids import make_uid


class StudyPurged(RuntimeError):
    """The study's purge started: a capture into it is refused (docs/purge.md)."""


class StudyNotFound(LookupError):
    """A study id named by a command does not exist (the id is in the message)."""


@dataclass(frozen=True)
class OpenRecording:
    id: uuid.UUID
    room: str
    source: str
    study_id: uuid.UUID
    mode: str
    passthrough: bool
    part_path: str
    final_path: str | None = None
    planned_media_id: uuid.UUID | None = None


def unscheduled_identifiers(now: dt.datetime) -> dict[str, str]:
    """Study ID and Accession Number as the statement's timestamp `YYYYMMDDHHIISSss` (Table 30,
    hundredths of a second, 16 characters = SH maximum), with Study Date/Time (DA/TM)."""
    stamp = f"{now:%Y%m%d%H%M%S}{now.microsecond // 10000:02d}"
    return {
        "study_id": stamp,
        "accession_number": stamp,
        "study_date": f"{now:%Y%m%d}",
        "study_time": f"{now:%H%M%S}.{now.microsecond // 1000:03d}",
    }


async def _lock_room(conn: Connection, room: str) -> None:
    # Two sources capturing at once before a patient is chosen must share one new study.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('cb.capture.room'), hashtext($1))", room
    )


class RoomTaken(RuntimeError):
    """Another capture process already serves this room."""


async def claim_room(conn: Connection, room: str) -> None:
    """Hold the room's session lock for the life of `conn`: two processes serving one room
    would salvage each other's recordings in progress as crashed ones."""
    taken = await conn.fetchval(
        "SELECT pg_try_advisory_lock(hashtext('cb.capture.serve'), hashtext($1))", room
    )
    if not taken:
        raise RoomTaken(f"room {room} is already served by another capture process")


async def study_exists(conn: Connection, study_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM studies WHERE id = $1", study_id))


async def room_study(conn: Connection, room: str) -> uuid.UUID | None:
    value = await conn.fetchval("SELECT study_id FROM capture_rooms WHERE room = $1", room)
    return value if isinstance(value, uuid.UUID) else None


async def set_room_study(conn: Connection, room: str, study_id: uuid.UUID | None) -> None:
    if study_id is not None and not await study_exists(conn, study_id):
        raise StudyNotFound(f"study {study_id} does not exist")
    await conn.execute(
        """INSERT INTO capture_rooms (room, study_id) VALUES ($1, $2)
           ON CONFLICT (room) DO UPDATE SET study_id = EXCLUDED.study_id, updated_at = now()""",
        room,
        study_id,
    )


async def refuse_purged(conn: Connection, study_id: uuid.UUID) -> None:
    """A study whose purge started takes no new capture (docs/purge.md "After a purge"): its
    local data is gone or going, and media added now would be a study the archive does not
    have under the same UID. The operator closes it or starts a new study; the room keeps it
    current until then, so nothing moves to another patient behind the operator's back."""
    row = await conn.fetchrow(
        """SELECT s.purged_at, p.study_id IS NOT NULL AS purging
           FROM studies s LEFT JOIN capture_purges p ON p.study_id = s.id WHERE s.id = $1""",
        study_id,
    )
    if row is None or not (row["purged_at"] or row["purging"]):
        return
    when = f" on {row['purged_at']:%Y-%m-%d}" if row["purged_at"] else ""
    raise StudyPurged(
        f"the study was purged{when} (its local data was removed after the archive "
        "committed it): nothing is captured into it; close it or start a new study"
    )


async def study_for_capture(
    pool: asyncpg.Pool, room: str, requested: uuid.UUID | None, org_uid_root: str
) -> tuple[uuid.UUID, bool]:
    """The study a capture attaches to: the requested one (made current), the room's current
    one, or a new unscheduled study (statement §4.1.3). Returns (id, created)."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_room(conn, room)
        if requested is not None:
            await refuse_purged(conn, requested)
            await set_room_study(conn, room, requested)
            return requested, False
        current = await room_study(conn, room)
        if current is not None:
            await refuse_purged(conn, current)
            return current, False
        study_id = uuid.uuid4()
        ids = unscheduled_identifiers(dt.datetime.now().astimezone())
        await conn.execute(
            """INSERT INTO studies (id, study_instance_uid, origin, room, study_id,
                                    accession_number, study_date, study_time)
               VALUES ($1, $2, 'unscheduled', $3, $4, $5, $6, $7)""",
            study_id,
            make_uid("study", str(study_id), root=org_uid_root),
            room,
            ids["study_id"],
            ids["accession_number"],
            ids["study_date"],
            ids["study_time"],
        )
        await set_room_study(conn, room, study_id)
        return study_id, True


async def insert_media(conn: Connection, event: MediaCaptured) -> None:
    """The media row and its MediaCaptured event, in the caller's transaction."""
    await conn.execute(
        """INSERT INTO media (id, study_id, room, source, kind, rel_path, size, sha256, mime,
                              width, height, frames, duration_s, fps, codec, recovered)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)""",
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
        event.recovered,
    )
    await enqueue(conn, event, f"media-{event.media_id}")


async def register_snapshot(pool: asyncpg.Pool, event: MediaCaptured) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await insert_media(conn, event)


async def open_recording(pool: asyncpg.Pool, rec: OpenRecording) -> None:
    await pool.execute(
        """INSERT INTO capture_recordings (id, room, source, study_id, mode, passthrough,
                                           part_path)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        rec.id,
        rec.room,
        rec.source,
        rec.study_id,
        rec.mode,
        rec.passthrough,
        rec.part_path,
    )


async def plan_media(pool: asyncpg.Pool, recording_id: uuid.UUID, media_id: uuid.UUID) -> None:
    await pool.execute(
        "UPDATE capture_recordings SET planned_media_id = $2 WHERE id = $1", recording_id, media_id
    )


async def set_final_path(pool: asyncpg.Pool, recording_id: uuid.UUID, final_path: str) -> None:
    """Journal the final name before the rename, so recovery finds a file renamed just before
    a crash."""
    await pool.execute(
        "UPDATE capture_recordings SET final_path = $2 WHERE id = $1", recording_id, final_path
    )


async def finish_recording(
    pool: asyncpg.Pool,
    recording_id: uuid.UUID,
    event: MediaCaptured | None,
    state: str,
    error: str | None = None,
    passthrough: bool | None = None,
) -> None:
    """Close the journal entry and, with a file, register its media row + event: one commit."""
    async with pool.acquire() as conn, conn.transaction():
        if event is not None:
            await insert_media(conn, event)
        await conn.execute(
            """UPDATE capture_recordings SET state = $2, media_id = $3, error = $4,
                      passthrough = coalesce($5, passthrough), ended_at = now()
               WHERE id = $1 AND state = 'recording'""",
            recording_id,
            state,
            uuid.UUID(event.media_id) if event else None,
            error,
            passthrough,
        )


async def open_recordings(pool: asyncpg.Pool, room: str) -> list[OpenRecording]:
    rows = await pool.fetch(
        """SELECT id, room, source, study_id, mode, passthrough, part_path, final_path,
                  planned_media_id
           FROM capture_recordings WHERE room = $1 AND state = 'recording' ORDER BY started_at""",
        room,
    )
    return [OpenRecording(**dict(r)) for r in rows]
