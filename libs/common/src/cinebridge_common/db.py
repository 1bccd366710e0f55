"""PostgreSQL access: an asyncpg pool with a clear error, and migrations under a lock.

Migrations live beside the owner of their tables: `cinebridge_<owner>/migrations/` (the common
tables in `cinebridge_common/migrations/`), each such package registered in its member's
`pyproject.toml` under the entry-point group `cinebridge.migrations`. The runner gathers the
files of every installed package and applies them in one order:

- `NNN_name.sql`: one numbered sequence for the whole database (ranges per owner: 0xx common,
  1xx scp, 2xx converter, 3xx sender, 4xx worklist, 5xx capture, 6xx gateway). Each file is
  applied once, in its own transaction, by whichever service gets the advisory lock first, and
  its name and SHA-256 are recorded: a service refuses to start when an applied file was edited
  since (change the schema with a new file instead). The file name is the identity, not the
  folder: a file may move to another package without being applied again.
- `R_name.sql`: repeatable files for functions and views (`CREATE OR REPLACE ...`), applied
  after the numbered ones whenever their text changed, so a function is edited in place instead
  of copied into a new numbered file. A numbered file whose only content is now carried by a
  repeatable file may be retired (removed); its row stays in `schema_migrations`.

A production image installs one service, so its start applies the common files and that
service's own; the other owners' tables come with their services.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from importlib import metadata, resources
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
_REPEATABLE = re.compile(r"^R_[a-z0-9_]+\.sql$")


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


class MigrationMismatch(RuntimeError):
    """An applied migration file was edited afterwards; the schema no longer matches the code."""


def _redact(dsn: str) -> str:
    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", dsn)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout_s: float = 10.0,
    application_name: str | None = None,
    server_settings: Mapping[str, str] | None = None,
    reset: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    command_timeout_s: float = 60.0,
) -> asyncpg.Pool:
    """Open a pool, retrying for `timeout_s`; raise DatabaseUnavailable with the cause after.
    `application_name` names its sessions (pg_stat_activity; the outbox's notifications);
    `server_settings` are further settings of its sessions (they survive the reset on
    release); `reset` replaces asyncpg's reset of a released connection (one more round trip
    per use: unlock, close cursors, unlisten, reset settings) for pools whose users leave no
    session state behind (an open transaction is still rolled back); a statement with no answer
    after `command_timeout_s` raises TimeoutError (PostgreSQL hung, its disk stalled)."""
    settings = dict(server_settings or {})
    if application_name:
        settings["application_name"] = application_name
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Exception | None = None
    while True:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                command_timeout=command_timeout_s,
                server_settings=settings or None,
                reset=reset,
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


def _checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


#: Entry-point group under which each member registers the package holding its SQL files.
MIGRATIONS_GROUP = "cinebridge.migrations"


def migration_packages() -> dict[str, str]:
    """Owner -> package of its migrations, for every installed member that registers one."""
    found = {ep.name: ep.value for ep in metadata.entry_points(group=MIGRATIONS_GROUP)}
    if "common" not in found:
        raise RuntimeError(
            f"no {MIGRATIONS_GROUP} entry points: cinebridge-common is not installed as a "
            "distribution (make install)"
        )
    return found


def _sql_files(
    pattern: re.Pattern[str], owners: Collection[str] | None = None
) -> list[tuple[str, str, str]]:
    """(file name, SQL, owner) of every file matching `pattern` in every migrations package
    (only those of `owners`, when given: what an image of one service installs)."""
    found = []
    for owner, package in sorted(migration_packages().items()):
        if owners is not None and owner not in owners:
            continue
        for entry in resources.files(package).iterdir():
            if pattern.match(entry.name):
                found.append((entry.name, entry.read_text(), owner))
    names = [name for name, _, _ in found]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise RuntimeError(f"migration files shipped by more than one owner: {clashes}")
    return found


def available_migrations(owners: Collection[str] | None = None) -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of every numbered migration installed (of `owners` only, when
    given), in global order."""
    found = sorted((int(name[:3]), name, sql) for name, sql, _ in _sql_files(_NAME, owners))
    numbers = [n for n, _, _ in found]
    if len(numbers) != len(set(numbers)):
        raise RuntimeError(f"duplicate migration numbers: {numbers}")
    return found


def repeatable_migrations(owners: Collection[str] | None = None) -> list[tuple[str, str]]:
    """(file name, SQL) of every repeatable migration (`R_*.sql`) installed (of `owners` only,
    when given), in name order."""
    return sorted((name, sql) for name, sql, _ in _sql_files(_REPEATABLE, owners))


async def migrate(
    pool: asyncpg.Pool,
    numbered: list[tuple[int, str, str]] | None = None,
    repeatable: list[tuple[str, str]] | None = None,
) -> list[str]:
    """Apply pending migrations once, whoever calls first; returns the names applied now.

    `numbered` and `repeatable` default to the installed files (tests pass their own).
    Raises MigrationMismatch, before applying anything, when an applied numbered file changed.
    """
    numbered = available_migrations() if numbered is None else numbered
    repeatable = repeatable_migrations() if repeatable is None else repeatable
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await _ensure_bookkeeping(conn)
            done = await _check_applied(conn, numbered)
            for number, name, sql in numbered:
                if number in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        """INSERT INTO schema_migrations (number, name, checksum)
                           VALUES ($1, $2, $3)""",
                        number,
                        name,
                        _checksum(sql),
                    )
                applied_now.append(name)
                log.info("migration applied", extra=kv(name=name))
            applied_now += await _apply_repeatable(conn, repeatable)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def _ensure_bookkeeping(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               number int PRIMARY KEY, name text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    # Stations migrated before checksums were kept get them recorded on their next start.
    await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_repeatables (
               name text PRIMARY KEY, checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )


async def _check_applied(conn: Connection, numbered: list[tuple[int, str, str]]) -> set[int]:
    """Numbers already applied; refuse a shipped file whose text differs from what was applied."""
    rows = await conn.fetch("SELECT number, name, checksum FROM schema_migrations")
    recorded = {r["number"]: (r["name"], r["checksum"]) for r in rows}
    for number, name, sql in numbered:
        if number not in recorded:
            continue
        applied_name, checksum = recorded[number]
        if checksum is None:
            await conn.execute(
                "UPDATE schema_migrations SET checksum = $2 WHERE number = $1",
                number,
                _checksum(sql),
            )
        elif checksum != _checksum(sql) or applied_name != name:
            raise MigrationMismatch(
                f"migration {name} differs from the {applied_name} applied to this database "
                "(the file was edited after it was applied); restore the file and change the "
                "schema with a new migration"
            )
    return set(recorded)


async def _apply_repeatable(conn: Connection, repeatable: list[tuple[str, str]]) -> list[str]:
    rows = await conn.fetch("SELECT name, checksum FROM schema_repeatables")
    recorded = {r["name"]: r["checksum"] for r in rows}
    applied = []
    for name, sql in repeatable:
        checksum = _checksum(sql)
        if recorded.get(name) == checksum:
            continue
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute(
                """INSERT INTO schema_repeatables (name, checksum) VALUES ($1, $2)
                   ON CONFLICT (name) DO UPDATE SET checksum = $2, applied_at = now()""",
                name,
                checksum,
            )
        applied.append(name)
        log.info("repeatable migration applied", extra=kv(name=name))
    return applied


def record_to_dict(record: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(record) if record is not None else None
