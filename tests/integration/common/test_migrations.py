"""The migration runner on a real PostgreSQL: checksums of applied files, repeatable files."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from cinebridge_common.db import MigrationMismatch, create_pool, migrate
from cinebridge_common.embedded import EmbeddedPostgres

pytestmark = pytest.mark.integration

TABLE = [(1, "001_things.sql", "CREATE TABLE things (id int PRIMARY KEY)")]
VIEW_V1 = ("R_things_view.sql", "CREATE OR REPLACE VIEW things_view AS SELECT id FROM things")
VIEW_V2 = (
    "R_things_view.sql",
    "CREATE OR REPLACE VIEW things_view AS SELECT id, 2 AS v FROM things",
)


@pytest.fixture
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    name = f"m_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.dsn_for("postgres"))
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    pool = await create_pool(postgres.dsn_for(name))
    yield pool
    await pool.close()


async def test_edited_applied_migration_is_refused_before_anything_runs(pool: asyncpg.Pool) -> None:
    assert await migrate(pool, TABLE, []) == ["001_things.sql"]
    edited = [(1, "001_things.sql", "CREATE TABLE things (id bigint PRIMARY KEY)")]
    pending = [(2, "002_more.sql", "CREATE TABLE more (id int)")]
    with pytest.raises(MigrationMismatch, match=r"001_things\.sql.*edited after it was applied"):
        await migrate(pool, edited + pending, [])
    assert await pool.fetchval("SELECT to_regclass('more')") is None  # nothing applied after it
    assert await migrate(pool, TABLE + pending, []) == ["002_more.sql"]


async def test_checksum_recorded_for_migrations_applied_without_one(pool: asyncpg.Pool) -> None:
    """A station migrated by a version that kept no checksums gets them on its next start."""
    await pool.execute(
        """CREATE TABLE schema_migrations (number int PRIMARY KEY, name text NOT NULL,
                                            applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    await pool.execute("CREATE TABLE things (id int PRIMARY KEY)")
    await pool.execute("INSERT INTO schema_migrations (number, name) VALUES (1, '001_things.sql')")
    assert await migrate(pool, TABLE, []) == []
    assert await pool.fetchval("SELECT checksum FROM schema_migrations") is not None
    edited = [(1, "001_things.sql", "CREATE TABLE things (id bigint)")]
    with pytest.raises(MigrationMismatch):
        await migrate(pool, edited, [])


async def test_repeatable_file_is_applied_again_only_when_its_text_changes(
    pool: asyncpg.Pool,
) -> None:
    assert await migrate(pool, TABLE, [VIEW_V1]) == ["001_things.sql", "R_things_view.sql"]
    assert await migrate(pool, TABLE, [VIEW_V1]) == []
    assert await migrate(pool, TABLE, [VIEW_V2]) == ["R_things_view.sql"]
    await pool.execute("INSERT INTO things VALUES (7)")
    assert await pool.fetchval("SELECT v FROM things_view WHERE id = 7") == 2


async def test_shipped_schema_has_the_scp_index_function_and_no_test_tables(
    pool: asyncpg.Pool,
) -> None:
    await migrate(pool)
    assert await pool.fetchval("SELECT to_regproc('scp_index_instance')") is not None
    assert await pool.fetchval("SELECT to_regclass('processed_messages')") is None
