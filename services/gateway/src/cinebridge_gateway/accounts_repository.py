"""SQL of the gateway's own accounts: users, sessions and API tokens."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from .base_repository import RepositoryBase

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


class AccountsRepository(RepositoryBase):
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
