"""Reads of other services' read models: the sender's deliveries (`delivery_states`,
`delivery_attempt_log`), the worklist's procedure steps (`mpps_step_states`), the SCP's index
(`received_study_index`), and the plumbing the ops page shows (outbox, dead letters). Each only
when it exists (`has_table`)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from .base_repository import Conn, RepositoryBase


class ServiceReads(RepositoryBase):
    # -- other services' read models ------------------------------------------------------
    async def mpps_for_study(self, study_id: uuid.UUID) -> dict[str, Any] | None:
        """The study's latest performed procedure step (the worklist service's
        `mpps_step_states`; an append or a relinked study has several, PS3.4 F.7.2.2)."""
        if not await self.has_table("mpps_step_states"):
            return None
        row = await self.pool.fetchrow(
            """SELECT id, server_id, sop_instance_uid, pps_id, state, final_status, reason,
                      attempts, last_status, last_error, started_at, ended_at, updated_at
               FROM mpps_step_states WHERE study_id = $1 ORDER BY seq DESC LIMIT 1""",
            study_id,
        )
        if row is None:
            return None
        step = dict(row)
        if isinstance(step["reason"], str):
            step["reason"] = json.loads(step["reason"])
        return step

    async def deliveries_for_study(self, study_id: uuid.UUID) -> list[dict[str, Any]]:
        if not await self.has_table("delivery_states"):
            return []
        # The converter's read model names the media item a delivery carries (the UI shows
        # its thumbnail and kind).
        media = "NULL::uuid"
        join = ""
        if await self.has_table("converted_instances"):
            media = "ci.media_id"
            join = "LEFT JOIN converted_instances ci ON ci.sop_instance_uid = d.sop_instance_uid"
        rows = await self.pool.fetch(
            f"""SELECT d.id, d.instance_id, d.destination_id, d.destination_name,
                      d.state, d.attempts, d.last_status, d.last_error, d.updated_at,
                      d.delivered_at, d.sop_instance_uid, d.sop_class_uid, {media} AS media_id,
                      CASE WHEN d.commitment_required THEN d.commitment END AS commitment,
                      d.commitment_required,
                      d.commitment_reason
               FROM delivery_states d
               {join}
               WHERE d.study_id = $1 ORDER BY d.instance_created_at, d.destination_name""",
            study_id,
        )
        return [dict(r) for r in rows]

    async def delivery_attempts(self, delivery_id: uuid.UUID) -> list[dict[str, Any]]:
        if not await self.has_table("delivery_attempt_log"):
            return []
        rows = await self.pool.fetch(
            """SELECT attempt, started_at, finished_at, outcome, status_code, error, sender
               FROM delivery_attempt_log WHERE delivery_id = $1 ORDER BY attempt""",
            delivery_id,
        )
        return [dict(r) for r in rows]

    async def delivery_study(self, delivery_id: uuid.UUID) -> uuid.UUID | None:
        if not await self.has_table("delivery_states"):
            return None
        value = await self.pool.fetchval(
            "SELECT study_id FROM delivery_states WHERE id = $1", delivery_id
        )
        return value if isinstance(value, uuid.UUID) else None

    async def failed_deliveries(self, limit: int = 50) -> list[dict[str, Any]]:
        if not await self.has_table("delivery_states"):
            return []
        rows = await self.pool.fetch(
            """SELECT d.id, d.study_id, d.instance_id, d.destination_name, d.state,
                      d.attempts, d.last_status, d.last_error, d.updated_at
               FROM delivery_states d
               WHERE d.state IN ('failed-permanent', 'failed-retrying')
               ORDER BY d.updated_at DESC LIMIT $1""",
            limit,
        )
        return [dict(r) for r in rows]

    async def delivery_backlog(self) -> dict[str, Any]:
        if not await self.has_table("delivery_states"):
            return {"pending": 0, "oldest_unsent_at": None}
        row = await self.pool.fetchrow(
            """SELECT count(*) AS pending, min(created_at) AS oldest_unsent_at
               FROM delivery_states
               WHERE state IN ('queued', 'sending', 'failed-retrying')"""
        )
        return dict(row) if row else {}

    # -- ops -----------------------------------------------------------------------------
    async def outbox_backlog(self) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT count(*) AS pending, min(created_at) AS oldest_at FROM outbox "
            "WHERE published_at IS NULL"
        )
        return dict(row) if row else {}

    async def dead_letter_count(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM dead_letters"))


async def received_study(conn: Conn, study_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT patient_name, patient_id, patient_birth_date, patient_sex "
        "FROM received_study_index WHERE id = $1",
        study_id,
    )
    return dict(row) if row else None
