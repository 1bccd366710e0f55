"""SQL of the gateway's audit log (`gateway_audit_log`): writing an entry, and its pages."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from .base_repository import Conn, RepositoryBase


@dataclass(frozen=True)
class AuditFilter:
    study_id: uuid.UUID | None = None
    actor: str | None = None
    action: str | None = None
    patient: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    before_id: int | None = None
    limit: int = 100


class AuditRepository(RepositoryBase):
    # -- audit log -----------------------------------------------------------------------
    async def audit(
        self,
        conn: Conn,
        actor: str,
        action: str,
        *,
        study_id: uuid.UUID | None = None,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
        client: str | None = None,
    ) -> None:
        await conn.execute(
            """INSERT INTO gateway_audit_log (actor, action, study_id, target, detail, client)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            actor,
            action,
            study_id,
            target,
            detail or {},
            client,
        )

    async def list_audit(self, f: AuditFilter) -> list[dict[str, Any]]:
        """The audit log, newest first; `patient` matches the study's patient name or ID
        (prefix, case-insensitive)."""
        patient = f.patient.lower().replace("\\", "").replace("%", "").replace("_", "\\_")
        rows = await self.pool.fetch(
            """SELECT a.id, a.at, a.actor, a.action, a.study_id, a.target, a.detail, a.client,
                      s.patient_name, s.patient_id
               FROM gateway_audit_log a LEFT JOIN studies s ON s.id = a.study_id
               WHERE ($1::uuid IS NULL OR a.study_id = $1) AND ($2::bigint IS NULL OR a.id < $2)
                 AND ($3::text IS NULL OR a.actor = $3) AND ($4::text IS NULL OR a.action = $4)
                 AND ($5::timestamptz IS NULL OR a.at >= $5)
                 AND ($6::timestamptz IS NULL OR a.at < $6)
                 AND ($7 = '' OR lower(s.patient_name) LIKE $7 || '%'
                      OR lower(s.patient_id) LIKE $7 || '%')
               ORDER BY a.id DESC LIMIT $8""",
            f.study_id,
            f.before_id,
            f.actor,
            f.action,
            f.since,
            f.until,
            patient,
            f.limit,
        )
        return [dict(r) for r in rows]

    async def exported_study(self, export_id: str) -> uuid.UUID | None:
        """The study an export was made of (its `study_exported` entry), for the download's."""
        found: uuid.UUID | None = await self.pool.fetchval(
            """SELECT study_id FROM gateway_audit_log
               WHERE action = 'study_exported' AND detail->>'export_id' = $1 LIMIT 1""",
            export_id,
        )
        return found
