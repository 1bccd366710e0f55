"""The MPPS steps as a queue (migration 404): claiming a due step for one request, recording
the SCP's answer, and what the sweeper and the gauge read. The shape of the sender's
deliveries: a lease per request, claimed `FOR UPDATE SKIP LOCKED`, every change announced."""

from __future__ import annotations

import uuid

import asyncpg
from cinebridge_common import outbox
from cinebridge_common.messages import MppsStepDue
from cinebridge_common.messages.worklist import MppsState
from cinebridge_common.replay import LostWork, body_uuid

from .mpps_repository import DUE, Step, announce, get_step, plain


async def claim(pool: asyncpg.Pool, step_id: uuid.UUID, owner: str, lease_s: float) -> Step | None:
    """Hold a due step for one request; None when it is not due, held elsewhere or locked."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT id FROM mpps_steps
               WHERE id = $1 AND state = ANY($2::text[]) AND next_attempt_at <= now()
                 AND (lease_until IS NULL OR lease_until < now())
               FOR UPDATE SKIP LOCKED""",
            step_id,
            list(DUE),
        )
        if row is None:
            return None
        await conn.execute(
            """UPDATE mpps_steps SET lease_owner = $2,
                   lease_until = now() + make_interval(secs => $3) WHERE id = $1""",
            step_id,
            owner,
            lease_s,
        )
        return await get_step(conn, str(step_id))


async def mark_sent(
    pool: asyncpg.Pool, step_id: uuid.UUID, operation: str, scheduled: bool | None = None
) -> None:
    """Noted before the request leaves, so a retry knows the SCP may already have it; an
    N-CREATE also notes whether it carried the worklist item (its N-SET follows the same)."""
    if operation == "create":
        await pool.execute(
            "UPDATE mpps_steps SET create_sent = true, scheduled = $2 WHERE id = $1",
            step_id,
            scheduled,
        )
    else:
        await pool.execute("UPDATE mpps_steps SET set_sent = true WHERE id = $1", step_id)


async def record_answer(
    pool: asyncpg.Pool,
    step: Step,
    owner: str,
    *,
    state: MppsState,
    created: bool,
    status: int | None,
    error: str | None,
    retry_in_s: float = 0.0,
) -> Step | None:
    """The step's state after one request, with its event (and its next job when due);
    None when the lease was lost (another worker took the step over)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            # A study that ended while its N-CREATE was on the way owes the N-SET now.
            """UPDATE mpps_steps SET created = $4, attempts = attempts + 1,
                   state = CASE WHEN $3 = 'in-progress' AND final_status IS NOT NULL
                                THEN 'pending-set' ELSE $3 END,
                   last_status = $5, last_error = $6, lease_owner = NULL, lease_until = NULL,
                   next_attempt_at = now() + make_interval(secs => $7), updated_at = now()
               WHERE id = $1 AND lease_owner = $2 RETURNING id""",
            step.id,
            owner,
            state,
            created,
            status,
            error,
            retry_in_s,
        )
        if row is None:
            return None
        now = await get_step(conn, str(step.id))
        assert now is not None
        await announce(conn, now, status, error)
        return now


async def overdue(pool: asyncpg.Pool, grace_s: float, limit: int = 200) -> list[asyncpg.Record]:
    """Steps owed a request for longer than any backoff (a lost job, a worker that died
    holding its lease): the sweeper queues their job again."""
    return list(
        await pool.fetch(
            """SELECT id, generation, attempts FROM mpps_steps
               WHERE state = ANY($2::text[])
                 AND next_attempt_at < now() - make_interval(secs => $1)
                 AND (lease_until IS NULL OR lease_until < now() - make_interval(secs => $1))
               ORDER BY next_attempt_at LIMIT $3""",
            grace_s,
            list(DUE),
            limit,
        )
    )


async def republish(pool: asyncpg.Pool, rows: list[asyncpg.Record], sweep: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for row in rows:
            job = MppsStepDue(job_key=str(row["id"]), step_id=str(row["id"]))
            key = f"mpps-{row['id']}-g{row['generation']}-a{row['attempts']}-s{sweep}"
            await outbox.enqueue(plain(conn), job, key)


async def state_counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT state, count(*) AS n FROM mpps_steps GROUP BY state")
    return {r["state"]: int(r["n"]) for r in rows}


#: The MPPS job lost with NATS's JetStream store (cinebridge_common.replay): done once its step
#: is no longer owed a request (sent, final, or gone). The sweeper would queue it again too,
#: but only after its grace of twice the lease or backoff cap; this is at once.
LOST_WORK = [
    LostWork(
        stream="CB_JOBS",
        subject=MppsStepDue.subject,
        done=f"""NOT EXISTS (SELECT 1 FROM mpps_steps s WHERE s.id = {body_uuid("step_id")}
                             AND s.state IN ({", ".join(f"'{state}'" for state in DUE)}))""",
    )
]
