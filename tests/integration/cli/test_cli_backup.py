"""`cinebridge backup` / `restore` against a real PostgreSQL: a row naming a file the store does
not have fails the backup; a damaged backup is refused before the new station is touched."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import asyncpg
import pytest
from cinebridge_cli.__main__ import main
from cinebridge_common.embedded import EmbeddedPostgres
from cinebridge_common.store import MediaStore
from cinebridge_testkit.databases import create_database

pytestmark = pytest.mark.integration


async def cli(*argv: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = await asyncio.to_thread(main, list(argv), out=lines.append)
    return code, lines


async def record_instance(database_url: str, rel_path: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO outgoing_instances (id, sop_instance_uid, sop_class_uid,
                   transfer_syntax_uid, rel_path, size, sha256)
               VALUES ($1, '1.2.3', '1.2.840.10008.5.1.4.1.1.7', '1.2.840.10008.1.2.1', $2, 1,
                       'x')""",
            uuid.uuid4(),
            rel_path,
        )
    finally:
        await conn.close()


async def empty_database(postgres: EmbeddedPostgres) -> str:
    return postgres.dsn_for(await create_database(postgres, "empty"))


async def table_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            )
        )
    finally:
        await conn.close()


async def test_a_referenced_file_missing_from_the_store_fails_the_backup(
    database_url: str, tmp_path: Path
) -> None:
    store = MediaStore(tmp_path / "media")
    kept = store.new_relative("dicom", "dcm")
    store.write_bytes(kept, b"kept")
    await record_instance(database_url, kept)
    lost = store.new_relative("dicom", "dcm")
    await record_instance(database_url, lost)
    code, out = await cli(
        "backup", str(tmp_path / "b"), "--database-url", database_url,
        "--media-root", str(store.root),
    )  # fmt: skip
    assert code == 1, out
    assert not (tmp_path / "b" / "manifest.json").exists()  # never mistaken for a backup


async def test_a_damaged_backup_is_refused_before_the_station_is_touched(
    database_url: str, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    store = MediaStore(tmp_path / "media")
    rel = store.new_relative("dicom", "dcm")
    store.write_bytes(rel, b"instance bytes")
    await record_instance(database_url, rel)
    folder = tmp_path / "b"
    code, out = await cli(
        "backup", str(folder), "--database-url", database_url, "--media-root", str(store.root)
    )
    assert code == 0, out
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == [rel]
    (folder / "files" / rel).write_bytes(b"instance bytEs")

    target = await empty_database(postgres)
    code, _ = await cli(
        "restore", str(folder), "--database-url", target, "--media-root", str(tmp_path / "new")
    )
    assert code == 1
    assert await table_count(target) == 0 and not (tmp_path / "new").exists()
