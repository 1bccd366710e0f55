"""The MPPS step rows (migrations 404, 405): reading a step, announcing its state, the SCP it
goes to, what it performed, making a step due for its N-SET, the operator's retry. Which step
of a study an event belongs to is `mpps_study_repository`'s; the queue is
`mpps_queue_repository`'s.

Every state change enqueues its `MppsStateChanged` (and, when the SCP is owed a request, the
`MppsStepDue` job) in the same transaction (transactional outbox), like the sender's deliveries.
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
    MppsStateChanged,
    MppsStepDue,
    WorklistServer,
)
from cinebridge_common.messages.worklist import MppsState

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
    #: The study's steps are numbered from 1 (later ones: appends, or after a relink).
    seq: int
    #: Whether the N-CREATE that left carried the worklist item (None: not sent yet).
    scheduled: bool | None


STEP = """SELECT id, study_id, server_id, sop_instance_uid, pps_id, state, created, create_sent,
                  set_sent, final_status, reason, started_at, ended_at, attempts,
                  next_attempt_at, generation, coalesce(operator, '') AS operator, seq, scheduled
           FROM mpps_steps"""


def as_step(row: asyncpg.Record) -> Step:
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
    row = await db.fetchrow(STEP + " WHERE id = $1", key)
    return as_step(row) if row else None


async def latest_step(conn: Conn, study_id: str) -> Step | None:
    """The study's latest step (its highest `seq`), locked for this transaction."""
    try:
        key = uuid.UUID(study_id)
    except ValueError:
        return None
    row = await conn.fetchrow(
        STEP + " WHERE study_id = $1 ORDER BY seq DESC LIMIT 1 FOR UPDATE", key
    )
    return as_step(row) if row else None


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


async def set_due(conn: Conn, step_id: uuid.UUID) -> Step:
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
    step = await latest_step(conn, study_id)
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
