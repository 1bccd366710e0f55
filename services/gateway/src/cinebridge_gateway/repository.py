"""All SQL of the gateway: users, sessions, tokens, audit log, studies, media, deliveries.

Tables of other services (sender's deliveries, the SCP's received index) are read only, and only
when they exist: `Repository.has_table` checks once and remembers.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from cinebridge_common.db import Connection

Conn = asyncpg.Pool | Connection
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


@dataclass(frozen=True)
class StudyFilter:
    q: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    origin: str | None = None
    status: str | None = None
    room: str | None = None
    limit: int = 50
    offset: int = 0


STUDY_COLUMNS = (
    "id, study_instance_uid, origin, room, patient_name, patient_id, patient_birth_date, "
    "patient_sex, accession_number, study_id, study_description, referring_physician, "
    "study_date, study_time, edited, state, created_at, updated_at"
)

#: Study-level status derived from its media and deliveries (statement §4.1.3: "non-converted
#: and converted studies are marked accordingly among local search results").
_STATUS_SQL = """
    CASE
      WHEN m.failed > 0 OR d.failed > 0 THEN 'failed'
      WHEN d.total > 0 AND d.sent = d.total THEN 'sent'
      WHEN m.total > 0 AND m.converted = m.total THEN 'converted'
      ELSE 'non-converted'
    END"""

_MEDIA_AGG = """
    LEFT JOIN LATERAL (
      SELECT count(*) FILTER (WHERE state <> 'deleted') AS total,
             count(*) FILTER (WHERE state = 'converted') AS converted,
             count(*) FILTER (WHERE state = 'failed') AS failed
      FROM media WHERE media.study_id = s.id) m ON true"""

_DELIVERY_AGG = """
    LEFT JOIN LATERAL (
      SELECT count(*) AS total,
             count(*) FILTER (WHERE state IN ('sent', 'warning')) AS sent,
             count(*) FILTER (WHERE state = 'failed-permanent') AS failed
      FROM deliveries WHERE deliveries.study_id = s.id) d ON true"""

_NO_DELIVERIES = " LEFT JOIN LATERAL (SELECT 0 AS total, 0 AS sent, 0 AS failed) d ON true"


def like_prefix(value: str) -> str:
    """A user's search text as a LIKE prefix: `*` and `?` are DICOM wildcards (PS3.4 C.2.2.2.4)."""
    escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    escaped = escaped.replace("*", "%").replace("?", "_")
    return escaped if escaped.endswith("%") else escaped + "%"


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

    async def create_user(self, username: str, password_hash: str, role: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            """INSERT INTO gateway_users (id, username, password_hash, role)
               VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO NOTHING
               RETURNING id, username, role, disabled, created_at""",
            uuid.uuid4(),
            username,
            password_hash,
            role,
        )
        return dict(row) if row else {}

    async def user_by_name(self, username: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT id, username, password_hash, role, disabled FROM gateway_users "
            "WHERE username = $1",
            username,
        )
        return dict(row) if row else None

    async def list_users(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT id, username, role, disabled, created_at FROM gateway_users ORDER BY username"
        )
        return [dict(r) for r in rows]

    async def update_user(
        self, username: str, *, password_hash: str | None, role: str | None, disabled: bool | None
    ) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            """UPDATE gateway_users SET password_hash = coalesce($2, password_hash),
                      role = coalesce($3, role), disabled = coalesce($4, disabled),
                      updated_at = now()
               WHERE username = $1 RETURNING id, username, role, disabled, created_at""",
            username,
            password_hash,
            role,
            disabled,
        )
        if row is not None and (disabled or password_hash):
            # A disabled user or a changed password ends every open session of that user.
            await self.pool.execute("DELETE FROM gateway_sessions WHERE user_id = $1", row["id"])
        return dict(row) if row else None

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
            f"""SELECT u.username, u.role, s.csrf_token, s.expires_at,
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
        principal = Principal(row["username"], row["role"], "session", row["csrf_token"], id_hash)
        return principal, expires_at

    async def delete_session(self, id_hash: str) -> None:
        await self.pool.execute("DELETE FROM gateway_sessions WHERE id_hash = $1", id_hash)

    async def purge_expired_sessions(self) -> int:
        result = await self.pool.execute("DELETE FROM gateway_sessions WHERE expires_at <= now()")
        return int(result.split()[-1])

    # -- API tokens ----------------------------------------------------------------------
    async def create_token(self, name: str, token_hash: str, role: str, by: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            """INSERT INTO gateway_api_tokens (id, name, token_hash, role, created_by)
               VALUES ($1, $2, $3, $4, $5)
               RETURNING id, name, role, created_by, created_at, last_used, revoked_at""",
            uuid.uuid4(),
            name,
            token_hash,
            role,
            by,
        )
        return dict(row) if row else {}

    async def token_principal(self, token_hash: str) -> Principal | None:
        row = await self.pool.fetchrow(
            f"""SELECT id, name, role,
                       coalesce(last_used < now() - interval '{TOUCH_EVERY_S} seconds', true)
                         AS stale
                FROM gateway_api_tokens WHERE token_hash = $1 AND revoked_at IS NULL""",
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
            "SELECT id, name, role, created_by, created_at, last_used, revoked_at "
            "FROM gateway_api_tokens ORDER BY created_at DESC"
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

    async def list_audit(
        self, study_id: uuid.UUID | None, limit: int, before_id: int | None
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT id, at, actor, action, study_id, target, detail, client
               FROM gateway_audit_log
               WHERE ($1::uuid IS NULL OR study_id = $1) AND ($2::bigint IS NULL OR id < $2)
               ORDER BY id DESC LIMIT $3""",
            study_id,
            before_id,
            limit,
        )
        return [dict(r) for r in rows]

    # -- studies -------------------------------------------------------------------------
    async def insert_study(self, conn: Conn, values: dict[str, Any]) -> dict[str, Any]:
        columns = ", ".join(values)
        params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        row = await conn.fetchrow(
            f"INSERT INTO studies ({columns}) VALUES ({params}) RETURNING {STUDY_COLUMNS}",
            *values.values(),
        )
        assert row is not None
        return dict(row)

    async def get_study(self, conn: Conn, study_id: uuid.UUID) -> dict[str, Any] | None:
        row = await conn.fetchrow(
            f"SELECT {STUDY_COLUMNS}, worklist_item FROM studies WHERE id = $1", study_id
        )
        return dict(row) if row else None

    async def update_study(
        self, conn: Conn, study_id: uuid.UUID, changes: dict[str, Any]
    ) -> dict[str, Any]:
        sets = ", ".join(f"{col} = ${i}" for i, col in enumerate(changes, start=2))
        row = await conn.fetchrow(
            f"UPDATE studies SET {sets}, updated_at = now() WHERE id = $1 "
            f"RETURNING {STUDY_COLUMNS}",
            study_id,
            *changes.values(),
        )
        assert row is not None
        return dict(row)

    async def search_studies(self, f: StudyFilter) -> list[dict[str, Any]]:
        """Local studies, and (statement §4.1.3 LOCAL: "created or received") studies the SCP
        received, newest first; the page is cut in SQL on both sides, then merged."""
        built = await self._search_sql(f)
        if built is None:
            return []
        rows = await self._fetch_planned(built[0], built[1], "fetch")
        return [dict(r) for r in rows]

    async def search_studies_json(self, f: StudyFilter) -> str:
        """The same page as a JSON array made by PostgreSQL: the hot path of the LOCAL dialog
        then costs the gateway no row decoding, validation or encoding."""
        built = await self._search_sql(f)
        if built is None:
            return "[]"
        sql = f"SELECT coalesce(json_agg(page), '[]'::json)::text FROM ({built[0]}) page"
        return str(await self._fetch_planned(sql, built[1], "fetchval"))

    async def _fetch_planned(self, sql: str, args: list[Any], method: str) -> Any:
        async with self.pool.acquire() as conn:
            # A fresh (uncached) statement is planned with the actual values: a cached one
            # turns generic after five runs and then walks the whole table for a rare prefix.
            statement = await conn.prepare(sql)
            return await getattr(statement, method)(*args)

    async def _search_sql(self, f: StudyFilter) -> tuple[str, list[Any]] | None:
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        common = _match_conditions(f, arg)
        want_local = f.origin != "received" and f.status != "received"
        want_received = (
            f.origin in (None, "received")
            and f.room is None
            and f.status in (None, "received")
            and await self.has_table("received_studies")
        )
        limit, offset = arg(f.limit), arg(f.offset)
        window = f"({limit}::int + {offset}::int)"
        parts = []
        if want_local:
            parts.append(await self._local_page(f, common, arg, window))
        if want_received:
            parts.append(_received_page(common, window))
        if not parts:
            return None
        union = " UNION ALL ".join(f"({part})" for part in parts)
        sql = f"SELECT * FROM ({union}) u ORDER BY created_at DESC LIMIT {limit} OFFSET {offset}"
        return sql, args

    async def _local_page(self, f: StudyFilter, common: list[str], arg: Any, window: str) -> str:
        where = list(common)
        if f.origin:
            where.append(f"s.origin = {arg(f.origin)}")
        if f.room:
            where.append(f"s.room = {arg(f.room)}")
        deliveries = _DELIVERY_AGG if await self.has_table("deliveries") else _NO_DELIVERIES
        # Without a status filter the page is cut before the lateral aggregates run.
        status_filter = f"WHERE status = {arg(f.status)}" if f.status else ""
        inner_limit = "" if f.status else f"ORDER BY s.created_at DESC LIMIT {window}"
        return f"""
            SELECT * FROM (
              SELECT p.*, m.total AS media_count, {_STATUS_SQL} AS status
              FROM (SELECT {_prefixed("s")} FROM studies s WHERE {" AND ".join(where)}
                    {inner_limit}) p
              {_MEDIA_AGG.replace("s.id", "p.id")}
              {deliveries.replace("s.id", "p.id")}
            ) x {status_filter}
            ORDER BY created_at DESC LIMIT {window}"""

    async def study_status(self, study_id: uuid.UUID) -> str:
        deliveries = _DELIVERY_AGG if await self.has_table("deliveries") else _NO_DELIVERIES
        value = await self.pool.fetchval(
            f"SELECT {_STATUS_SQL} FROM studies s {_MEDIA_AGG} {deliveries} WHERE s.id = $1",
            study_id,
        )
        return str(value or "non-converted")

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

    async def mark_media_deleted(self, conn: Conn, media_id: uuid.UUID) -> bool:
        result = await conn.execute(
            "UPDATE media SET state = 'deleted' WHERE id = $1 AND state <> 'deleted'", media_id
        )
        return result.endswith(" 1")

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

    # -- deliveries (sender's tables, read only) -----------------------------------------
    async def deliveries_for_study(self, study_id: uuid.UUID) -> list[dict[str, Any]]:
        if not await self.has_table("deliveries"):
            return []
        rows = await self.pool.fetch(
            """SELECT d.id, d.instance_id, d.destination_id, dst.name AS destination_name,
                      d.state, d.attempts, d.last_status, d.last_error, d.updated_at,
                      d.delivered_at, i.sop_instance_uid, i.sop_class_uid
               FROM deliveries d
               JOIN outgoing_instances i ON i.id = d.instance_id
               JOIN destinations dst ON dst.id = d.destination_id
               WHERE d.study_id = $1 ORDER BY i.created_at, dst.name""",
            study_id,
        )
        return [dict(r) for r in rows]

    async def delivery_attempts(self, delivery_id: uuid.UUID) -> list[dict[str, Any]]:
        if not await self.has_table("delivery_attempts"):
            return []
        rows = await self.pool.fetch(
            """SELECT attempt, started_at, finished_at, outcome, status_code, error, sender
               FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt""",
            delivery_id,
        )
        return [dict(r) for r in rows]

    async def delivery_study(self, delivery_id: uuid.UUID) -> uuid.UUID | None:
        if not await self.has_table("deliveries"):
            return None
        value = await self.pool.fetchval(
            "SELECT study_id FROM deliveries WHERE id = $1", delivery_id
        )
        return value if isinstance(value, uuid.UUID) else None

    async def failed_deliveries(self, limit: int = 50) -> list[dict[str, Any]]:
        if not await self.has_table("deliveries"):
            return []
        rows = await self.pool.fetch(
            """SELECT d.id, d.study_id, d.instance_id, dst.name AS destination_name, d.state,
                      d.attempts, d.last_status, d.last_error, d.updated_at
               FROM deliveries d JOIN destinations dst ON dst.id = d.destination_id
               WHERE d.state IN ('failed-permanent', 'failed-retrying')
               ORDER BY d.updated_at DESC LIMIT $1""",
            limit,
        )
        return [dict(r) for r in rows]

    async def delivery_backlog(self) -> dict[str, Any]:
        if not await self.has_table("deliveries"):
            return {"pending": 0, "oldest_unsent_at": None}
        row = await self.pool.fetchrow(
            """SELECT count(*) AS pending, min(created_at) AS oldest_unsent_at FROM deliveries
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


def _prefix_condition(column: str, value: str, arg: Any) -> str:
    return f"lower({column}) LIKE {arg(like_prefix(value))}"


def _match_conditions(f: StudyFilter, arg: Any) -> list[str]:
    """Conditions on columns that local and received studies share (alias `s`)."""
    where = ["true"]
    if f.q:
        columns = ("s.patient_name", "s.patient_id", "s.accession_number")
        where.append("(" + " OR ".join(_prefix_condition(c, f.q, arg) for c in columns) + ")")
    if f.patient_id:
        where.append(_prefix_condition("s.patient_id", f.patient_id, arg))
    if f.accession_number:
        where.append(_prefix_condition("s.accession_number", f.accession_number, arg))
    if f.date_from:
        where.append(f"s.study_date >= {arg(f.date_from)}")
    if f.date_to:
        where.append(f"s.study_date <> '' AND s.study_date <= {arg(f.date_to)}")
    return where


def _received_page(common: list[str], window: str) -> str:
    """The SCP's received studies (services/scp, table received_studies) as search rows."""
    return f"""
        SELECT s.id, s.study_instance_uid, 'received' AS origin, NULL::text AS room,
               s.patient_name, s.patient_id, s.patient_birth_date, s.patient_sex,
               s.accession_number, s.study_id, s.study_description, s.referring_physician,
               s.study_date, s.study_time, false AS edited, 'received' AS state,
               s.first_received_at AS created_at, s.last_received_at AS updated_at,
               (SELECT count(*) FROM received_instances i WHERE i.study_id = s.id) AS media_count,
               'received' AS status
        FROM received_studies s WHERE {" AND ".join(common)}
        ORDER BY s.first_received_at DESC LIMIT {window}"""


async def received_study(conn: Conn, study_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT patient_name, patient_id, patient_birth_date, patient_sex "
        "FROM received_studies WHERE id = $1",
        study_id,
    )
    return dict(row) if row else None


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in STUDY_COLUMNS.split(","))
