"""All SQL of the gateway: users, sessions, tokens, audit log, studies, media, deliveries.

Other services' data is read through the read models they publish (the sender's
`delivery_states`, the SCP's `received_study_index`), and only when they exist:
`Repository.has_table` checks once and remembers.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from cinebridge_common.db import Connection

from .search_repository import (
    COMMITMENT_SQL,
    DELIVERY_AGG,
    MEDIA_AGG,
    NO_DELIVERIES,
    STATUS_SQL,
    STUDY_COLUMNS,
    StudyFilter,
    build_search,
)

Conn = asyncpg.Pool | Connection
USER_COLUMNS = "id, username, role, disabled, must_change_password, created_at"
BEARER_COLUMNS = "id, name, role, created_by, created_at, expires_at, last_used, revoked_at"
#: Sessions and tokens record their use at most this often (a write per request would cost an
#: fsync'd commit on every API call).
TOUCH_EVERY_S = 30


@dataclass(frozen=True)
class Principal:
    """Who is calling: a logged-in user (session) or an API token."""

    name: str
    role: str
    kind: str  # "session" | "token"
    csrf_token: str | None = None
    session_hash: str | None = None
    must_change_password: bool = False


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


class Repository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._tables: dict[str, bool] = {}

    async def has_table(self, name: str) -> bool:
        # Only a True answer is remembered: another service may create the table later.
        if not self._tables.get(name):
            found = await self.pool.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
            self._tables[name] = bool(found)
        return self._tables[name]

    # -- users ---------------------------------------------------------------------------
    async def count_users(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM gateway_users"))

    async def create_user(
        self, username: str, password_hash: str, role: str, must_change_password: bool = False
    ) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"""INSERT INTO gateway_users (id, username, password_hash, role, must_change_password)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO NOTHING
               RETURNING {USER_COLUMNS}""",
            uuid.uuid4(),
            username,
            password_hash,
            role,
            must_change_password,
        )
        return dict(row) if row else {}

    async def user_by_name(self, username: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT id, username, password_hash, role, disabled, must_change_password "
            "FROM gateway_users WHERE username = $1",
            username,
        )
        return dict(row) if row else None

    async def list_users(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(f"SELECT {USER_COLUMNS} FROM gateway_users ORDER BY username")
        return [dict(r) for r in rows]

    async def update_user(
        self, username: str, *, password_hash: str | None, role: str | None, disabled: bool | None
    ) -> dict[str, Any] | None:
        """An administrator's change; a password set here must be changed at the next log-in."""
        row = await self.pool.fetchrow(
            f"""UPDATE gateway_users SET password_hash = coalesce($2, password_hash),
                      role = coalesce($3, role), disabled = coalesce($4, disabled),
                      must_change_password = must_change_password OR $2 IS NOT NULL,
                      updated_at = now()
               WHERE username = $1 RETURNING {USER_COLUMNS}""",
            username,
            password_hash,
            role,
            disabled,
        )
        if row is not None and (disabled or password_hash or role):
            # A disabled user, a new password or another role ends every open session.
            await self.pool.execute("DELETE FROM gateway_sessions WHERE user_id = $1", row["id"])
        return dict(row) if row else None

    async def change_own_password(
        self, username: str, password_hash: str, keep_session: str | None
    ) -> None:
        """The user's own change: other sessions end, this one stays."""
        async with self.pool.acquire() as conn, conn.transaction():
            user_id = await conn.fetchval(
                """UPDATE gateway_users SET password_hash = $2, must_change_password = false,
                          updated_at = now() WHERE username = $1 RETURNING id""",
                username,
                password_hash,
            )
            await conn.execute(
                "DELETE FROM gateway_sessions WHERE user_id = $1 AND id_hash IS DISTINCT FROM $2",
                user_id,
                keep_session,
            )

    # -- sessions ------------------------------------------------------------------------
    async def create_session(
        self, id_hash: str, user_id: uuid.UUID, csrf: str, expires_at: dt.datetime, client: str
    ) -> None:
        await self.pool.execute(
            """INSERT INTO gateway_sessions (id_hash, user_id, csrf_token, expires_at, client)
               VALUES ($1, $2, $3, $4, $5)""",
            id_hash,
            user_id,
            csrf,
            expires_at,
            client,
        )

    async def session_principal(
        self, id_hash: str, idle_s: float, max_s: float
    ) -> tuple[Principal, dt.datetime] | None:
        """The session's user; its expiry slides (idle timeout, capped by the absolute one).

        The slide is written at most every TOUCH_EVERY_S, so reads stay reads (no commit per
        request)."""
        row = await self.pool.fetchrow(
            f"""SELECT u.username, u.role, s.csrf_token, s.expires_at, u.must_change_password,
                       s.last_seen < now() - interval '{TOUCH_EVERY_S} seconds' AS stale
                FROM gateway_sessions s JOIN gateway_users u ON u.id = s.user_id
                WHERE s.id_hash = $1 AND s.expires_at > now() AND NOT u.disabled""",
            id_hash,
        )
        if row is None:
            return None
        expires_at = row["expires_at"]
        if row["stale"]:
            expires_at = (
                await self.pool.fetchval(
                    """UPDATE gateway_sessions SET last_seen = now(),
                          expires_at = least(now() + make_interval(secs => $2),
                                             created_at + make_interval(secs => $3))
                   WHERE id_hash = $1 RETURNING expires_at""",
                    id_hash,
                    idle_s,
                    max_s,
                )
                or expires_at
            )
        principal = Principal(
            row["username"],
            row["role"],
            "session",
            row["csrf_token"],
            id_hash,
            row["must_change_password"],
        )
        return principal, expires_at

    async def delete_session(self, id_hash: str) -> None:
        await self.pool.execute("DELETE FROM gateway_sessions WHERE id_hash = $1", id_hash)

    async def purge_expired_sessions(self) -> int:
        result = await self.pool.execute("DELETE FROM gateway_sessions WHERE expires_at <= now()")
        return int(result.split()[-1])

    # -- API tokens ----------------------------------------------------------------------
    async def create_token(
        self, name: str, token_hash: str, role: str, by: str, expires_at: dt.datetime | None
    ) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"""INSERT INTO gateway_api_tokens (id, name, token_hash, role, created_by, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING {BEARER_COLUMNS}""",
            uuid.uuid4(),
            name,
            token_hash,
            role,
            by,
            expires_at,
        )
        return dict(row) if row else {}

    async def token_principal(self, token_hash: str) -> Principal | None:
        row = await self.pool.fetchrow(
            f"""SELECT id, name, role,
                       coalesce(last_used < now() - interval '{TOUCH_EVERY_S} seconds', true)
                         AS stale
                FROM gateway_api_tokens WHERE token_hash = $1 AND revoked_at IS NULL
                  AND (expires_at IS NULL OR expires_at > now())""",
            token_hash,
        )
        if row is None:
            return None
        if row["stale"]:
            await self.pool.execute(
                "UPDATE gateway_api_tokens SET last_used = now() WHERE id = $1", row["id"]
            )
        return Principal(f"token:{row['name']}", row["role"], "token")

    async def list_tokens(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {BEARER_COLUMNS} FROM gateway_api_tokens ORDER BY created_at DESC"
        )
        return [dict(r) for r in rows]

    async def revoke_token(self, token_id: uuid.UUID) -> bool:
        result = await self.pool.execute(
            "UPDATE gateway_api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            token_id,
        )
        return result.endswith(" 1")

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

    # -- studies -------------------------------------------------------------------------
    async def get_study(self, conn: Conn, study_id: uuid.UUID) -> dict[str, Any] | None:
        row = await conn.fetchrow(
            f"SELECT {STUDY_COLUMNS}, worklist_item FROM studies WHERE id = $1", study_id
        )
        return dict(row) if row else None

    async def _search_repository(self, f: StudyFilter) -> tuple[str, list[Any]] | None:
        return build_search(
            f,
            with_deliveries=await self.has_table("delivery_states"),
            with_received=await self.has_table("received_study_index"),
        )

    async def search_studies(self, f: StudyFilter) -> list[dict[str, Any]]:
        """The LOCAL dialog's page as rows (see `search_repository.build_search`)."""
        built = await self._search_repository(f)
        if built is None:
            return []
        rows = await self._fetch_planned(built[0], built[1], "fetch")
        return [dict(r) for r in rows]

    async def search_studies_json(self, f: StudyFilter) -> str:
        """The same page as a JSON array made by PostgreSQL: the hot path of the LOCAL dialog
        then costs the gateway no row decoding, validation or encoding."""
        built = await self._search_repository(f)
        if built is None:
            return "[]"
        sql = f"SELECT coalesce(json_agg(page), '[]'::json)::text FROM ({built[0]}) page"
        return str(await self._fetch_planned(sql, built[1], "fetchval"))

    async def _fetch_planned(self, sql: str, args: list[Any], method: str) -> Any:
        # Through the connection's statement cache: one round trip, and once PostgreSQL has
        # chosen a generic plan no planning either. The prefixes are index ranges with
        # parameters (`search_repository.prefix_range`), so a generic plan uses the prefix
        # indexes; with `LIKE $1` alone it walked the whole table for a rare prefix.
        return await getattr(self.pool, method)(sql, *args)

    async def study_status(self, study_id: uuid.UUID) -> str:
        deliveries = DELIVERY_AGG if await self.has_table("delivery_states") else NO_DELIVERIES
        value = await self.pool.fetchval(
            f"SELECT {STATUS_SQL} FROM studies s {MEDIA_AGG} {deliveries} WHERE s.id = $1",
            study_id,
        )
        return str(value or "non-converted")

    async def study_commitment(self, study_id: uuid.UUID) -> str | None:
        if not await self.has_table("delivery_states"):
            return None
        value = await self.pool.fetchval(
            f"SELECT {COMMITMENT_SQL} FROM studies s {DELIVERY_AGG} WHERE s.id = $1", study_id
        )
        return str(value) if value is not None else None

    async def uncommitted_studies(
        self, older_than_s: float, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Studies stored at a destination that requires Storage Commitment and not committed
        `older_than_s` after they were sent (the ops page; the sender's read model)."""
        if not await self.has_table("delivery_states"):
            return []
        rows = await self.pool.fetch(
            """SELECT d.study_id, d.destination_name AS destination,
                      min(d.delivered_at) AS sent_at,
                      count(*) AS instances,
                      count(*) FILTER (WHERE d.commitment = 'failed') AS failed,
                      max(d.commitment_reason) AS reason,
                      min(s.patient_id) AS patient_id, min(s.accession_number) AS accession_number
               FROM delivery_states d LEFT JOIN studies s ON s.id = d.study_id
               WHERE d.commitment_required AND d.state IN ('sent', 'warning')
                 AND d.commitment IS DISTINCT FROM 'committed'
                 AND d.commitment IS DISTINCT FROM 'unsupported'
                 AND d.delivered_at < now() - make_interval(secs => $1)
               GROUP BY d.study_id, d.destination_name ORDER BY min(d.delivered_at) LIMIT $2""",
            float(older_than_s),
            limit,
        )
        return [dict(r) for r in rows]

    async def count_studies(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM studies"))

    # -- media ---------------------------------------------------------------------------
    async def list_media(self, study_id: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT id, study_id, room, source, kind, rel_path, size, mime, width, height,
                      frames, duration_s, fps, codec, state, error, captured_at
               FROM media WHERE study_id = $1 AND state <> 'deleted' ORDER BY captured_at""",
            study_id,
        )
        return [dict(r) for r in rows]

    async def get_media(self, media_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT id, study_id, kind, rel_path, mime, state FROM media WHERE id = $1", media_id
        )
        return dict(row) if row else None

    async def media_to_convert(
        self, conn: Conn, study_id: uuid.UUID
    ) -> list[tuple[uuid.UUID, str]]:
        """(media id, state) of every media item of the study that is not deleted."""
        rows = await conn.fetch(
            "SELECT id, state FROM media WHERE study_id = $1 AND state <> 'deleted' "
            "ORDER BY captured_at",
            study_id,
        )
        return [(r["id"], r["state"]) for r in rows]

    async def outbox_has(self, conn: Conn, msg_id: str) -> bool:
        """Whether a message with this id was enqueued (and not yet purged after publishing)."""
        found = await conn.fetchval("SELECT 1 FROM outbox WHERE msg_id = $1", msg_id)
        return found is not None

    # -- other services' read models ------------------------------------------------------
    async def mpps_for_study(self, study_id: uuid.UUID) -> dict[str, Any] | None:
        """The study's performed procedure step (the worklist service's `mpps_step_states`)."""
        if not await self.has_table("mpps_step_states"):
            return None
        row = await self.pool.fetchrow(
            """SELECT id, server_id, sop_instance_uid, pps_id, state, final_status, reason,
                      attempts, last_status, last_error, started_at, ended_at, updated_at
               FROM mpps_step_states WHERE study_id = $1""",
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
