"""The sender's SQL of what is to be sent: outgoing instances, their deliveries (one per instance
and destination), Forward and the operator's retry. A delivery queued here is due at once; the
queue's trigger (migration 307) wakes the destination's workers when the transaction commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from cinebridge_common.messages import ForwardStudy, InstanceCreated
from cinebridge_common.messages.sender import DeliveryState
from cinebridge_common.replay import LostWork, body_uuid

from .repository import Conn, _announce, uuid_or_none


async def record_instance(conn: Conn, msg: InstanceCreated) -> None:
    await conn.execute(
        """INSERT INTO outgoing_instances (id, study_id, sop_instance_uid, sop_class_uid,
                                           transfer_syntax_uid, rel_path, size, sha256)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (id) DO NOTHING""",
        uuid.UUID(msg.instance_id),
        uuid_or_none(msg.study_id),
        msg.sop_instance_uid,
        msg.sop_class_uid,
        msg.transfer_syntax_uid,
        msg.rel_path,
        msg.size,
        msg.sha256,
    )


async def instance_ids(
    conn: Conn, study_id: str | None, instance_id: str | None
) -> list[uuid.UUID]:
    if instance_id:
        rows = await conn.fetch(
            "SELECT id FROM outgoing_instances WHERE id = $1", uuid.UUID(instance_id)
        )
    else:
        rows = await conn.fetch(
            "SELECT id FROM outgoing_instances WHERE study_id = $1 ORDER BY created_at, id",
            uuid_or_none(study_id),
        )
    return [r["id"] for r in rows]


async def ensure_deliveries(
    conn: Conn,
    instances: Sequence[uuid.UUID],
    destinations: Sequence[uuid.UUID],
    *,
    resend: bool,
) -> int:
    """Create a queued delivery per (instance, destination). With `resend` (Forward), finished
    deliveries are queued again as a new generation; ones in flight are left alone. Returns how
    many were (re)queued. The queue's trigger wakes the destination's workers at commit."""
    queued = 0
    for destination_id in destinations:
        for instance_id in instances:
            row = await conn.fetchrow(
                """INSERT INTO deliveries (id, instance_id, destination_id, study_id)
                   SELECT $1, i.id, $3, i.study_id FROM outgoing_instances i WHERE i.id = $2
                   ON CONFLICT (instance_id, destination_id) DO NOTHING
                   RETURNING id, instance_id, destination_id, study_id, state, attempts,
                             generation""",
                uuid.uuid4(),
                instance_id,
                destination_id,
            )
            if row is None and resend:
                row = await conn.fetchrow(
                    """UPDATE deliveries SET state = 'queued', attempts = 0,
                           next_attempt_at = now(), generation = generation + 1,
                           last_status = NULL, last_error = NULL, commitment = NULL,
                           commitment_reason = NULL, committed_at = NULL,
                           commitment_requests = 0, updated_at = now()
                       WHERE instance_id = $1 AND destination_id = $2
                         AND state IN ('sent', 'warning', 'failed-permanent')
                       RETURNING id, instance_id, destination_id, study_id, state, attempts,
                                 generation""",
                    instance_id,
                    destination_id,
                )
            if row is None:
                continue
            await _announce(conn, dict(row))
            queued += 1
    return queued


async def retry_now(conn: Conn, delivery_id: str) -> DeliveryState | None:
    """Operator's retry: queue the delivery again at once, as a new generation."""
    row = await conn.fetchrow(
        """UPDATE deliveries SET state = CASE WHEN state = 'sending' THEN state ELSE 'queued' END,
               attempts = CASE WHEN state = 'failed-permanent' THEN 0 ELSE attempts END,
               next_attempt_at = now(), generation = generation + 1, updated_at = now()
           WHERE id = $1
           RETURNING id, instance_id, destination_id, study_id, state, attempts, generation""",
        uuid.UUID(delivery_id),
    )
    if row is None:
        return None
    await _announce(conn, dict(row))
    state: DeliveryState = row["state"]
    return state


async def forward_done(conn: Conn, job_key: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM forward_requests WHERE job_key = $1", job_key))


async def mark_forward_done(conn: Conn, job_key: str, deliveries: int) -> None:
    await conn.execute(
        "INSERT INTO forward_requests (job_key, deliveries) VALUES ($1, $2)", job_key, deliveries
    )


#: What the sender consumes, lost with NATS's JetStream store (`cinebridge_common.replay`): an
#: announced instance is done once recorded (its deliveries are queued in the same
#: transaction, and the queue is this database's), a Forward once its job key is recorded.
LOST_WORK = [
    LostWork(
        stream="CB_EVENTS",
        subject=InstanceCreated.subject,
        done=f"EXISTS (SELECT 1 FROM outgoing_instances i WHERE i.id = {body_uuid('instance_id')})",
    ),
    LostWork(
        stream="CB_JOBS",
        subject=ForwardStudy.subject,
        done="EXISTS (SELECT 1 FROM forward_requests f WHERE f.job_key = body->>'job_key')",
    ),
]
