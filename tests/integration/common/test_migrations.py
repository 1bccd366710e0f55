"""The migration runner on a real PostgreSQL: checksums of applied files, repeatable files, files
beside their owners."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
from cinebridge_common.db import (
    MigrationMismatch,
    available_migrations,
    create_pool,
    migrate,
    migration_packages,
    repeatable_migrations,
)
from cinebridge_common.embedded import EmbeddedPostgres
from cinebridge_common.station import StationSettings, load_station_settings
from cinebridge_testkit.databases import create_database, drop_database

pytestmark = pytest.mark.integration

TABLE = [(1, "001_things.sql", "CREATE TABLE things (id int PRIMARY KEY)")]
VIEW_V1 = ("R_things_view.sql", "CREATE OR REPLACE VIEW things_view AS SELECT id FROM things")
VIEW_V2 = (
    "R_things_view.sql",
    "CREATE OR REPLACE VIEW things_view AS SELECT id, 2 AS v FROM things",
)


@pytest.fixture
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    name = await create_database(postgres, "m")
    pool = await create_pool(postgres.dsn_for(name))
    yield pool
    await pool.close()
    await drop_database(postgres, name)


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


#: Every file as it stood when all migrations lived in cinebridge_common/migrations/: name and
#: SHA-256 (what schema_migrations and schema_repeatables record on a station migrated then).
BEFORE_THE_MOVE = {
    "001_common.sql": "db63cc81aca9fcc802f56246992bd4935b69310b08f9a46e4ad4c7a256dca786",
    "002_studies.sql": "eb5874d2ff7a4a964be6f97ce8c080d12cd131ca1cc3cc59631c14164b732b13",
    "003_station_settings.sql": "40e8fe05aedd42ad6051f75663af06957f987b80c2993e1a644f167fb3f7904d",
    "004_drop_test_scratch_table.sql": "6a61a0ff8064e11f9c4977bc6e9b89a2f186de18ff071465601528500acd040f",  # noqa: E501
    "101_scp_index.sql": "c7c025df8769da081f152dd34698217fb3bcbaac3165b6572b6f37b31385e827",
    "201_converter.sql": "9fa21cbb72ecd00b9216c544e6e5b796ce013a6a8764b2c9c4a05041e3e26c4d",
    "202_converter_jobs.sql": "a971cc61a105027fc205d8c46da0981321d4cb78cc58a91d64543322bef7de50",
    "301_sender.sql": "7a5cb7c6f10155aa35e8e3da0ced2b51fe2d2c38c07aed3ac2a4d57813d533cc",
    "302_sender_destination_health.sql": "68c13132cd7a7eb1657fd0410cbdfad648ec18406d3d028697e8302a683b2509",  # noqa: E501
    "303_sender_dicomweb.sql": "959e5293de4546aefc2e2092983e2cf95678082fade4f4cafa7241ddcf270bb8",
    "401_worklist.sql": "619012540ba6fa33bddfbdeb93b870e4aa47f9e7ff77bbc8cd833b50df2ac0c1",
    "402_studies_modality.sql": "375e816a2c9c698c182a0d195ff592c045602689daa0a854d4c14c81ba98d825",
    "501_capture.sql": "7ca80d567524a1c18a520f27285320e4761f9b3475927b946a6492ca6e4a0818",
    "502_capture_final_path.sql": "ca3dbd91361c766e7aaf121b9ecbe11ec6a2871ed361bf2393623e366693cdb1",  # noqa: E501
    "503_capture_planned_media.sql": "ba96643a0544c9436aeb28af20cefc629d008ecb2957a34682849d22cfa9a2a8",  # noqa: E501
    "601_gateway.sql": "8d65f21211e151cfecdd2ed8970fead7cd3414361e8314223b7edf50cb550355",
    "602_gateway_roles.sql": "8ea16546502f99799105bdaaf47c75df24e33f48e9aac0161d85bd71e06329ea",
    "603_gateway_audit_exports.sql": "24228f84e6b38b1b272f460ff10d3bf7d1998cd967384edbd57b6f0034c57683",  # noqa: E501
    "R_scp_index_instance.sql": "5478ea84134b00da5ed37323fb9e87ae9adccfa10f46513a94228f55a748a0d7",
}
#: The number range of each owner's numbered files.
RANGES = {
    "common": range(0, 100),
    "scp": range(100, 200),
    "converter": range(200, 300),
    "sender": range(300, 400),
    "worklist": range(400, 500),
    "capture": range(500, 600),
    "gateway": range(600, 700),
}


def _sha(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


#: Released files that moved to the owner of their table after their release: the name (and
#: so the number) is the file's identity on every station that applied it (docs/architecture.md).
MOVED_AFTER_RELEASE = {
    "003_station_settings.sql": "gateway",
    "402_studies_modality.sql": "capture",
}


def test_every_owner_ships_its_files_in_its_range() -> None:
    from importlib import resources

    packages = migration_packages()
    assert set(packages) == set(RANGES)
    for owner, package in packages.items():
        assert package == f"cinebridge_{owner}.migrations"
        for entry in resources.files(package).iterdir():
            if entry.name in MOVED_AFTER_RELEASE:
                assert MOVED_AFTER_RELEASE[entry.name] == owner, (owner, entry.name)
            elif entry.name.endswith(".sql") and not entry.name.startswith("R_"):
                assert int(entry.name[:3]) in RANGES[owner], (owner, entry.name)


def test_files_kept_their_names_and_text_when_they_moved_to_their_owners() -> None:
    installed = {name: _sha(sql) for _, name, sql in available_migrations()}
    installed |= {name: _sha(sql) for name, sql in repeatable_migrations()}
    assert {name: installed.get(name) for name in BEFORE_THE_MOVE} == BEFORE_THE_MOVE


async def _schema(pool: asyncpg.Pool) -> list[tuple[object, ...]]:
    """Tables, views and their columns, and functions, of the public schema."""
    columns = await pool.fetch(
        """SELECT table_name, column_name, data_type, is_nullable, column_default
           FROM information_schema.columns WHERE table_schema = 'public'
           ORDER BY table_name, column_name"""
    )
    functions = await pool.fetch(
        """SELECT p.proname, md5(pg_get_functiondef(p.oid)) FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'public' ORDER BY 1"""
    )
    return [tuple(r) for r in columns] + [tuple(r) for r in functions]


async def test_database_migrated_before_the_move_starts_unchanged(pool: asyncpg.Pool) -> None:
    """A station migrated when every file lived in the common package: the runner, now finding
    the files beside their owners, applies nothing and changes nothing."""
    before_numbered = [m for m in available_migrations() if m[1] in BEFORE_THE_MOVE]
    before_repeatable = [r for r in repeatable_migrations() if r[0] in BEFORE_THE_MOVE]
    assert len(before_numbered) + len(before_repeatable) == len(BEFORE_THE_MOVE)
    assert all(_sha(sql) == BEFORE_THE_MOVE[name] for _, name, sql in before_numbered)
    assert all(_sha(sql) == BEFORE_THE_MOVE[name] for name, sql in before_repeatable)
    await migrate(pool, before_numbered, before_repeatable)
    schema = await _schema(pool)
    bookkeeping = await pool.fetch("SELECT * FROM schema_migrations ORDER BY number")
    repeatables = await pool.fetch("SELECT * FROM schema_repeatables ORDER BY name")

    newer = {m[1] for m in available_migrations()} | {r[0] for r in repeatable_migrations()}
    assert await migrate(pool) == sorted(newer - set(BEFORE_THE_MOVE))
    if newer <= set(BEFORE_THE_MOVE):
        assert await _schema(pool) == schema
        assert await pool.fetch("SELECT * FROM schema_migrations ORDER BY number") == bookkeeping
        assert await pool.fetch("SELECT * FROM schema_repeatables ORDER BY name") == repeatables


async def _columns(pool: asyncpg.Pool, table: str) -> set[str]:
    rows = await pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
    )
    return {r["column_name"] for r in rows}


async def test_each_image_migrates_a_new_station_alone(postgres: EmbeddedPostgres) -> None:
    """A production image installs the common files and its service's own: each such set
    applies on an empty database, whichever service starts first (no file needs a table of
    another service's image). Capture's brings the catalog's `modality` column, the gateway's
    the station settings' table."""
    for owner in sorted(RANGES.keys() - {"common"}):
        name = await create_database(postgres, "img")
        pool = await create_pool(postgres.dsn_for(name))
        try:
            image = {"common", owner}
            await migrate(pool, available_migrations(image), repeatable_migrations(image))
            applied = {r["name"] for r in await pool.fetch("SELECT name FROM schema_migrations")}
            assert applied == {n for _, n, _ in available_migrations(image)}
            assert ("modality" in await _columns(pool, "studies")) == (owner == "capture")
            # The station settings' table comes with the gateway; before, every key is unset.
            settings = await pool.fetchval("SELECT to_regclass('station_settings')")
            assert (settings is not None) == (owner == "gateway")
            assert await load_station_settings(pool) == StationSettings()
        finally:
            await pool.close()
            await drop_database(postgres, name)


async def test_station_without_worklist_gets_the_catalog_column_from_capture(
    pool: asyncpg.Pool,
) -> None:
    """A station migrated before 402 moved to capture, on which the worklist service never ran
    (so 402 never applied): capture's next start adds the column; a station that did apply it
    applies nothing again (test_database_migrated_before_the_move_starts_unchanged)."""
    old = [m for m in available_migrations() if m[1] in BEFORE_THE_MOVE and not 400 <= m[0] < 500]
    await migrate(pool, old, [])
    assert "modality" not in await _columns(pool, "studies")
    image = {"common", "capture"}
    applied = await migrate(pool, available_migrations(image), repeatable_migrations(image))
    assert "402_studies_modality.sql" in applied
    assert "modality" in await _columns(pool, "studies")
