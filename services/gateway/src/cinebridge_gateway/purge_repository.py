"""SQL of the gateway's part in the local purge policy (docs/purge.md): the audit record of each
purged study, written once however often the event is delivered."""

from __future__ import annotations

import uuid

import asyncpg
from cinebridge_common.messages.purge import StudyPurged
from cinebridge_common.replay import LostWork, body_uuid

#: The actor of what the station does by policy rather than by a person's hand.
POLICY_ACTOR = "purge-policy"


async def audit_study_purged(pool: asyncpg.Pool, event: StudyPurged) -> bool:
    """One `study_purged` row per study, with what was removed; False when it was recorded."""
    inserted = await pool.fetchval(
        """INSERT INTO gateway_audit_log (actor, action, study_id, target, detail, client, at)
           SELECT $1, 'study_purged', $2, $3, $4, NULL, $5
           WHERE NOT EXISTS (SELECT 1 FROM gateway_audit_log
                             WHERE study_id = $2 AND action = 'study_purged')
           RETURNING 1""",
        POLICY_ACTOR,
        uuid.UUID(event.study_id),
        event.study_instance_uid,
        event.model_dump(mode="json", exclude={"schema_version", "study_instance_uid"}),
        event.occurred_at,
    )
    return inserted is not None


#: Capture's announcement lost with NATS's JetStream store (cinebridge_common.replay): done once
#: the study's `study_purged` row is in the audit log (by `gateway_audit_study`, whose first
#: column is the study), or when the id is not one (the handler could not record it).
LOST_WORK = [
    LostWork(
        stream="CB_EVENTS",
        subject=StudyPurged.subject,
        done=f"""{body_uuid("study_id")} IS NULL
                 OR EXISTS (SELECT 1 FROM gateway_audit_log a
                            WHERE a.study_id = {body_uuid("study_id")}
                              AND a.action = 'study_purged')""",
    )
]
