"""PostgreSQL access: an asyncpg pool with a clear error, and numbered migrations under a lock.

Migrations live in `cinebridge_common/migrations/NNN_name.sql`, one sequence for the whole
database (ranges per owner: 0xx common, 1xx scp, 2xx converter, 3xx sender, 4xx worklist,
5xx capture, 6xx gateway). Each file is applied once, in its own transaction, by whichever
service gets the advisory lock first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from importlib import resources
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from .logging import kv

log = logging.getLogger(__name__)

#: pg_advisory_lock key for migrations ("CINEBRDG" as an int64).
MIGRATION_LOCK_KEY = 0x43494E4542524447 & 0x7FFFFFFFFFFFFFFF
#: A connection as handed out by a pool or opened directly (for type hints of SQL helpers).
Connection = asyncpg.Connection | PoolConnectionProxy
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached (or refuses us); says where and why."""


#: What asyncpg raises when PostgreSQL is away or the connection died: refused or reset sockets,
#: a connection closed under a query (InterfaceError and kin), "cannot switch to state"
#: (InternalClientError, a connection dropped mid-COMMIT), server shutdown or start-up.
DB_DOWN: tuple[type[Exception], ...] = (
    DatabaseUnavailable,
    OSError,
    asyncpg.InterfaceError,
    asyncpg.exceptions._base.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
)


def _redact(dsn: str) -> str:
    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", dsn)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 10.0
) -> asyncpg.Pool:
    """Open a pool, retrying for `timeout_s`; raise DatabaseUnavailable with the cause after."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Exception | None = None
    while True:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                command_timeout=60,
            )
            assert pool is not None
            return pool
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            last = exc
        if asyncio.get_running_loop().time() >= deadline:
            raise DatabaseUnavailable(
                f"PostgreSQL at {_redact(dsn)} is unreachable: {last!r} "
                "(is it running? check CB_DATABASE_URL)"
            ) from last
        await asyncio.sleep(0.5)


def available_migrations() -> list[tuple[int, str, str]]:
    """(number, file name, SQL) for every migration shipped in the package, in order."""
    found = []
    for entry in resources.files("cinebridge_common.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    found.sort()
    numbers = [n for n, _, _ in found]
    if len(numbers) != len(set(numbers)):
        raise RuntimeError(f"duplicate migration numbers: {numbers}")
    return found


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply pending migrations once, whoever calls first; returns the names applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       number int PRIMARY KEY, name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["number"] for r in await conn.fetch("SELECT number FROM schema_migrations")}
            for number, name, sql in available_migrations():
                if number in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (number, name) VALUES ($1, $2)", number, name
                    )
                applied_now.append(name)
                log.info("migration applied", extra=kv(name=name))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


def record_to_dict(record: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(record) if record is not None else None


async def claim_once(conn: Connection, consumer: str, key: str) -> bool:
    """Record that `consumer` processed `key`, in the caller's transaction.

    True the first time; False when it was already processed (a redelivery): the handler then
    skips its side effects and acks. Together with the work in the same transaction this makes
    at-least-once delivery do the work exactly once.
    """
    inserted = await conn.fetchval(
        """INSERT INTO processed_messages (consumer, msg_key) VALUES ($1, $2)
           ON CONFLICT DO NOTHING RETURNING 1""",
        consumer,
        key,
    )
    return inserted is not None
