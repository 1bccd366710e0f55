"""All SQL of the MPPS steps (migration 404): creating a study's step, recording what was
performed, claiming a step to talk to the SCP, recording the answer.

Every state change enqueues its `MppsStateChanged` (and, when the SCP is owed a request, the
`MppsStepDue` job) in the same transaction (transactional outbox), like the sender's deliveries.
Each event of a study locks its step row first (`FOR UPDATE`), so a Save, the instances it makes
and a discontinuation decide one after the other.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from cinebridge_common import outbox
from cinebridge_common.messages import (
    CodedReason,
    InstanceCreated,
    MppsStateChanged,
    MppsStepDue,
    WorklistServer,
)
from cinebridge_common.messages.worklist import MppsState
from cinebridge_common.uids import make_uid

from .mpps import PerformedInstance
from .repository import _server

Conn = asyncpg.Connection | PoolConnectionProxy
#: States in which the SCP is owed a request.
DUE = ("pending-create", "pending-set", "failed-retrying")
FINAL = ("completed", "discontinued", "failed")


@dataclass(frozen=True)
class Step:
    id: uuid.UUID
    study_id: uuid.UUID
    server_id: str
    sop_instance_uid: str
    pps_id: str
    state: MppsState
    created: bool
    create_sent: bool
    set_sent: bool
    final_status: str | None
    reason: dict[str, str] | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    attempts: int
    next_attempt_at: dt.datetime
    generation: int
    operator: str


_STEP = """SELECT id, study_id, server_id, sop_instance_uid, pps_id, state, created, create_sent,
                  set_sent, final_status, reason, started_at, ended_at, attempts,
                  next_attempt_at, generation, coalesce(operator, '') AS operator
           FROM mpps_steps"""


def _step(row: asyncpg.Record) -> Step:
    data = dict(row)
    if isinstance(data["reason"], str):
        data["reason"] = json.loads(data["reason"])
    return Step(**data)


def plain(conn: Conn) -> asyncpg.Connection:
    return cast(asyncpg.Connection, conn)


async def announce(
    conn: Conn, step: Step, status: int | None = None, error: str | None = None
) -> None:
    event = MppsStateChanged(
        step_id=str(step.id),
        study_id=str(step.study_id),
        state=step.state,
        status_code=status,
        error=error,
    )
    key = f"mpps-state-{step.id}-g{step.generation}-a{step.attempts}-{step.state}"
    await outbox.enqueue(plain(conn), event, key)
    if step.state in ("pending-create", "pending-set"):
        # New work; a failed-retrying step is paced by its job's delayed redelivery instead.
        job = MppsStepDue(job_key=str(step.id), step_id=str(step.id))
        await outbox.enqueue(
            plain(conn), job, f"mpps-{step.id}-g{step.generation}-a{step.attempts}"
        )


async def get_step(db: asyncpg.Pool | Conn, step_id: str) -> Step | None:
    try:
        key = uuid.UUID(step_id)
    except ValueError:
        return None
    row = await db.fetchrow(_STEP + " WHERE id = $1", key)
    return _step(row) if row else None


async def _locked_step(conn: Conn, study_id: str) -> Step | None:
    try:
        key = uuid.UUID(study_id)
    except ValueError:
        return None
    row = await conn.fetchrow(_STEP + " WHERE study_id = $1 FOR UPDATE", key)
    return _step(row) if row else None


async def mpps_server(db: asyncpg.Pool | Conn, study_instance_uid: str) -> WorklistServer | None:
    """The MPPS SCP of the study: the server that listed its worklist item today (it is that
    RIS's procedure), else the first enabled server with an MPPS SCP."""
    row = await db.fetchrow(
        """SELECT s.* FROM worklist_servers s
           WHERE s.enabled AND s.mpps_enabled
           ORDER BY EXISTS (SELECT 1 FROM worklist_cache c WHERE c.server_id = s.id
                            AND c.item->>'study_instance_uid' = $1) DESC, s.position, s.id
           LIMIT 1""",
        study_instance_uid,
    )
    return _server(row) if row else None


async def ensure_step(conn: Conn, study_id: str, started_at: dt.datetime) -> Step | None:
    """The study's step, created (pending-create, its job queued) if it has none yet; None when
    the study is unknown or no worklist server has an MPPS SCP."""
    try:
        key = uuid.UUID(study_id)
    except ValueError:
        return None
    study_uid = await conn.fetchval("SELECT study_instance_uid FROM studies WHERE id = $1", key)
    if study_uid is None:
        return None
    existing = await conn.fetchrow(_STEP + " WHERE study_id = $1", key)
    if existing is not None:
        return _step(existing)
    server = await mpps_server(conn, study_uid)
    if server is None:
        return None
    step_id = uuid.uuid5(key, "mpps-step")  # one step per study, whoever creates it
    row = await conn.fetchrow(
        """INSERT INTO mpps_steps (id, study_id, server_id, sop_instance_uid, pps_id, started_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (study_id) DO NOTHING RETURNING id""",
        step_id,
        key,
        server.id,
        make_uid("cinebridge-mpps", str(step_id)),
        step_id.hex[:16].upper(),  # SH, 16 characters (PS3.5 6.2)
        started_at,
    )
    step = await get_step(conn, str(step_id))
    if row is not None and step is not None:
        await announce(conn, step)
    return step


async def record_saved(
    conn: Conn, study_id: str, media: list[str], saved_at: dt.datetime, by: str | None
) -> Step | None:
    """Save: these media are being converted; the step completes when each is done."""
    step = await _locked_step(conn, study_id)
    if step is None or step.final_status is not None:
        return step  # no step, or already ending: a PPS that is final cannot change (F.7.2.2)
    await conn.execute(
        """UPDATE mpps_steps SET saved_at = coalesce(saved_at, $2), operator = $3,
               updated_at = now() WHERE id = $1""",
        step.id,
        saved_at,
        (by or "")[:64],
    )
    await conn.executemany(
        """INSERT INTO mpps_media (step_id, media_id) VALUES ($1, $2)
           ON CONFLICT (step_id, media_id) DO NOTHING""",
        [(step.id, uuid.UUID(m)) for m in media],
    )
    return await _maybe_complete(conn, step)


async def record_instance(conn: Conn, msg: InstanceCreated) -> Step | None:
    step = await _locked_step(conn, msg.study_id)
    if step is None or not msg.series_instance_uid:
        return step
    media_id = uuid.UUID(msg.media_id)
    await conn.execute(
        """INSERT INTO mpps_instances (sop_instance_uid, step_id, media_id, sop_class_uid,
                                       series_instance_uid, series_description)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sop_instance_uid) DO NOTHING""",
        msg.sop_instance_uid,
        step.id,
        media_id,
        msg.sop_class_uid,
        msg.series_instance_uid,
        msg.series_description or "",
    )
    # A recording split into `parts` instances is converted once every part is here.
    await conn.execute(
        """INSERT INTO mpps_media (step_id, media_id, parts, outcome)
           SELECT $1, $2, $3::int, CASE WHEN count(*) >= $3::int THEN 'converted' END
           FROM mpps_instances WHERE step_id = $1 AND media_id = $2
           ON CONFLICT (step_id, media_id) DO UPDATE
               SET parts = EXCLUDED.parts, outcome = EXCLUDED.outcome""",
        step.id,
        media_id,
        msg.parts,
    )
    return await _maybe_complete(conn, step)


async def record_media_failed(conn: Conn, study_id: str, media_id: str) -> Step | None:
    step = await _locked_step(conn, study_id)
    if step is None:
        return None
    await conn.execute(
        """INSERT INTO mpps_media (step_id, media_id, outcome) VALUES ($1, $2, 'failed')
           ON CONFLICT (step_id, media_id) DO UPDATE SET outcome = 'failed'""",
        step.id,
        uuid.UUID(media_id),
    )
    return await _maybe_complete(conn, step)


async def _maybe_complete(conn: Conn, step: Step) -> Step:
    """COMPLETED once saved and every media item of the Save is converted or failed; the
    N-SET is due now if the N-CREATE went through, else right after it."""
    row = await conn.fetchrow(
        """UPDATE mpps_steps SET final_status = 'COMPLETED', ended_at = saved_at,
               updated_at = now()
           WHERE id = $1 AND saved_at IS NOT NULL AND final_status IS NULL
             AND NOT EXISTS (SELECT 1 FROM mpps_media
                             WHERE step_id = $1 AND outcome IS NULL)
           RETURNING id""",
        step.id,
    )
    if row is None:
        return step
    return await _set_due(conn, step.id)


async def discontinue(
    conn: Conn, study_id: str, reason: CodedReason, at: dt.datetime
) -> Step | None:
    """DISCONTINUED with a CID 9300 reason; a step already ending keeps its end."""
    step = await _locked_step(conn, study_id)
    if step is None or step.final_status is not None:
        return step
    await conn.execute(
        """UPDATE mpps_steps SET final_status = 'DISCONTINUED', reason = $2, ended_at = $3,
               updated_at = now() WHERE id = $1""",
        step.id,
        json.dumps(reason.model_dump()),
        at,
    )
    return await _set_due(conn, step.id)


async def _set_due(conn: Conn, step_id: uuid.UUID) -> Step:
    """An in-progress step owes its N-SET now; one still being created sends it after."""
    row = await conn.fetchrow(
        """UPDATE mpps_steps SET state = 'pending-set', next_attempt_at = now(),
               generation = generation + 1, updated_at = now()
           WHERE id = $1 AND state = 'in-progress' RETURNING id""",
        step_id,
    )
    step = await get_step(conn, str(step_id))
    assert step is not None
    if row is not None:
        await announce(conn, step)
    return step


async def performed_instances(
    db: asyncpg.Pool | Conn, step_id: uuid.UUID
) -> list[PerformedInstance]:
    rows = await db.fetch(
        """SELECT sop_class_uid, sop_instance_uid, series_instance_uid, series_description
           FROM mpps_instances WHERE step_id = $1 ORDER BY created_at, sop_instance_uid""",
        step_id,
    )
    return [PerformedInstance(**dict(r)) for r in rows]


async def study_row(db: asyncpg.Pool | Conn, study_id: uuid.UUID) -> dict[str, Any] | None:
    row = await db.fetchrow("SELECT * FROM studies WHERE id = $1", study_id)
    if row is None:
        return None
    study = dict(row)
    if isinstance(study.get("worklist_item"), str):
        study["worklist_item"] = json.loads(study["worklist_item"])
    return study


async def server(db: asyncpg.Pool | Conn, server_id: str) -> WorklistServer | None:
    row = await db.fetchrow("SELECT * FROM worklist_servers WHERE id = $1", server_id)
    return _server(row) if row else None


async def retry_now(conn: Conn, study_id: str) -> Step | None:
    """The operator's retry of a failed step: due now, attempts counted afresh; a step not yet
    created goes to the MPPS SCP configured now (its server may have been fixed or replaced)."""
    step = await _locked_step(conn, study_id)
    if step is None or step.state not in ("failed", "failed-retrying"):
        return step
    server_id = step.server_id
    if not step.created:
        uid = await conn.fetchval(
            "SELECT study_instance_uid FROM studies WHERE id = $1", step.study_id
        )
        server = await mpps_server(conn, uid or "")
        server_id = server.id if server is not None else server_id
    await conn.execute(
        """UPDATE mpps_steps SET state = CASE WHEN created THEN 'pending-set'
                                              ELSE 'pending-create' END,
               server_id = $2, attempts = 0, next_attempt_at = now(),
               generation = generation + 1, updated_at = now()
           WHERE id = $1""",
        step.id,
        server_id,
    )
    again = await get_step(conn, str(step.id))
    assert again is not None
    await announce(conn, again)
    return again
