"""Test databases on the session's PostgreSQL: created under a unique name, dropped after."""

from __future__ import annotations

import contextlib
import uuid

import asyncpg
from cinebridge_common.embedded import EmbeddedPostgres


async def create_database(
    postgres: EmbeddedPostgres, prefix: str, template: str | None = None
) -> str:
    """A new database named `<prefix>_<random>` (a copy of `template` if given); its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    copy = f" TEMPLATE {template}" if template else ""
    admin = await asyncpg.connect(postgres.dsn_for("postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name}{copy}")
    finally:
        await admin.close()
    return name


async def drop_database(postgres: EmbeddedPostgres, name: str) -> None:
    """Drop a test's database: the whole suite shares one server in one process, and a
    database per test left behind would fill the disk. Best effort: a server a test stopped
    (and the session restarts) or a connection still closing must not fail the test."""
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        admin = await asyncpg.connect(postgres.dsn_for("postgres"), timeout=10)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()
