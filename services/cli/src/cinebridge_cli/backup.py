"""`cinebridge backup DIR` / `cinebridge restore DIR`: the station's PostgreSQL database, its
settings and every file of its media store (captured media, DICOM instances made and received),
consistent with each other.

These two speak to PostgreSQL and the media volume directly (the gateway may be down), with
PostgreSQL's own tools and asyncpg, never through a service's code.

Consistency: one REPEATABLE READ transaction exports its snapshot; `pg_dump --snapshot` dumps
exactly what that transaction sees, and the same transaction lists the files its rows reference
(every `rel_path` column) and counts every table's rows. Files are copied only after that:
the store writes a file (fsync'd, renamed) before any row names it, so every file the dump
references already exists; files written later are copied too and are referenced by nothing.
A referenced file that disappears before it is copied (deleted after the dump started) fails
the backup. `manifest.json` is written last, with the SHA-256 of the dump and of every file: a
directory without it is not a backup.

Restore goes only into an empty station (a database without tables, an empty media store),
checks the whole backup against its manifest before writing anything, then restores, copies
and verifies: every file present with its checksum, every table with its row count, the
station settings equal.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from .api import NO, UNAVAILABLE, USAGE, CliError
from .progress import Progress

Out = Callable[[str], None]
FORMAT = "cinebridge-backup/1"
MANIFEST = "manifest.json"
DUMP = "database.dump"
SETTINGS = "station-settings.json"
FILES = "files"
#: Not part of the store's content: temporary names of writers in progress.
SKIPPED_DIRS = frozenset({".tmp"})
#: Restore refuses a station that is not empty.
NOT_EMPTY = 6
CHUNK = 1 << 20


@dataclass(frozen=True)
class Target:
    """Where the station keeps its data: the database URL and the media store's root."""

    database_url: str
    media_root: Path


def target_of(args: argparse.Namespace) -> Target:
    if not args.database_url:
        raise CliError(USAGE, "no database: pass --database-url or set CB_DATABASE_URL")
    if not args.media_root:
        raise CliError(USAGE, "no media store: pass --media-root or set CB_MEDIA_ROOT")
    return Target(args.database_url, Path(args.media_root))


def pg_tool_env(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment carrying it (PGPASSWORD): a password
    on a command line is visible to every user of the machine in the process list."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is None:
        return url, env
    env["PGPASSWORD"] = unquote(parts.password)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), env


def _run_tool(argv: list[str], url: str) -> None:
    dsn, env = pg_tool_env(url)
    tool = shutil.which(argv[0])
    if tool is None:
        raise CliError(UNAVAILABLE, f"{argv[0]} not found: install PostgreSQL's client tools")
    done = subprocess.run(
        [tool, *argv[1:], "--dbname", dsn], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise CliError(UNAVAILABLE, f"{argv[0]} failed: {done.stderr.strip()[-2000:]}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def copy_file(src: Path, dst: Path, progress: Progress) -> str:
    """Copy through a temporary name, fsync'd, then renamed; returns the SHA-256 of what was
    read (so the manifest holds the checksum of the bytes copied, read once)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = dst.with_name(f".{dst.name}.part")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        while block := fin.read(CHUNK):
            digest.update(block)
            fout.write(block)
            progress.advance(len(block))
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dst)
    return digest.hexdigest()


def store_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, absolute path) of every file of the store, sorted; not `.tmp/`."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        dirnames.sort()
        for name in sorted(filenames):
            path = here / name
            yield path.relative_to(root).as_posix(), path


# -- the database --------------------------------------------------------------------------


async def _tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        """SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS name
           FROM information_schema.tables
           WHERE table_type = 'BASE TABLE'
             AND table_schema NOT IN ('pg_catalog', 'information_schema')
             AND table_schema NOT LIKE 'pg\\_%'
           ORDER BY 1"""
    )
    return [r["name"] for r in rows]


async def _row_counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in await _tables(conn)}


async def _referenced_files(conn: asyncpg.Connection) -> set[str]:
    """Every store path a row names: the `rel_path` columns of every table."""
    columns = await conn.fetch(
        """SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS t
           FROM information_schema.columns c
           JOIN information_schema.tables USING (table_schema, table_name)
           WHERE c.column_name = 'rel_path' AND table_type = 'BASE TABLE'
             AND table_schema NOT IN ('pg_catalog', 'information_schema')"""
    )
    found: set[str] = set()
    for row in columns:
        values = await conn.fetch(f"SELECT DISTINCT rel_path FROM {row['t']}")
        found.update(v["rel_path"] for v in values if v["rel_path"])
    return found


async def _station_settings(conn: asyncpg.Connection) -> dict[str, Any]:
    if "public.station_settings" not in await _tables(conn):
        return {}
    rows = await conn.fetch("SELECT key, value::text AS value FROM station_settings ORDER BY key")
    return {r["key"]: json.loads(r["value"]) for r in rows}


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=15)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise CliError(UNAVAILABLE, f"database unreachable: {type(exc).__name__}: {exc}") from None


async def _dump(target: Target, dump: Path) -> dict[str, Any]:
    """pg_dump (custom format) of one snapshot, and what that snapshot references and holds."""
    conn = await _connect(target.database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            facts = {
                "server_version": await conn.fetchval("SHOW server_version"),
                "tables": await _row_counts(conn),
                "referenced": sorted(await _referenced_files(conn)),
                "station_settings": await _station_settings(conn),
            }
            # The exporting transaction stays open until pg_dump has taken the snapshot.
            await asyncio.to_thread(
                _run_tool,
                ["pg_dump", "--format=custom", f"--snapshot={snapshot}", f"--file={dump}"],
                target.database_url,
            )
    finally:
        await conn.close()
    return facts


# -- backup --------------------------------------------------------------------------------


def backup(args: argparse.Namespace, out: Out) -> int:
    target = target_of(args)
    folder = Path(args.dir)
    if folder.exists() and any(folder.iterdir()):
        raise CliError(USAGE, f"{folder} is not empty: a backup goes into a new directory")
    if not target.media_root.is_dir():
        raise CliError(USAGE, f"media store {target.media_root} is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    Progress("backup", 0).say("dumping the database (one snapshot) …")
    facts = asyncio.run(_dump(target, folder / DUMP))
    files = list(store_files(target.media_root))
    progress = Progress("backup", sum(p.stat().st_size for _, p in files))
    entries: list[dict[str, Any]] = []
    referenced = set(facts["referenced"])
    try:
        for rel, path in files:
            progress.note(rel[-60:])
            try:
                size = path.stat().st_size
                digest = copy_file(path, folder / FILES / rel, progress)
            except FileNotFoundError:
                continue  # gone since listed; judged below if a row names it
            entries.append(
                {"path": rel, "size": size, "sha256": digest, "referenced": rel in referenced}
            )
    finally:
        progress.close()
    missing = sorted(referenced - {e["path"] for e in entries})
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise CliError(
            NO,
            f"{len(missing)} files the database references are not in the media store "
            f"(deleted after the dump started, or lost before): {shown}; {folder} is not a "
            "complete backup",
        )
    (folder / SETTINGS).write_text(json.dumps(facts["station_settings"], indent=2) + "\n")
    manifest = {
        "format": FORMAT,
        "started_at": started.isoformat(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        "server_version": facts["server_version"],
        "database": {"file": DUMP, "sha256": sha256_file(folder / DUMP)},
        "tables": facts["tables"],
        "station_settings": facts["station_settings"],
        "files": entries,
    }
    _write_durably(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    total = sum(e["size"] for e in entries)
    report = {
        "dir": str(folder),
        "tables": len(facts["tables"]),
        "rows": sum(facts["tables"].values()),
        "files": len(entries),
        "bytes": total,
        "referenced_files": len(referenced),
    }
    _report(
        out,
        args,
        report,
        f"backup {folder}: {report['rows']} rows in {report['tables']} "
        f"tables, {len(entries)} files ({total} bytes), checksums in {MANIFEST}",
    )
    return 0


def _write_durably(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(fh.name, path)


def _report(out: Out, args: argparse.Namespace, report: dict[str, Any], text: str) -> None:
    if args.json:
        out(json.dumps(report, indent=2, sort_keys=True))
    else:
        out(text)


# -- restore -------------------------------------------------------------------------------


def load_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise CliError(USAGE, f"{folder} has no {MANIFEST}: not a complete backup") from None
    except ValueError:
        raise CliError(NO, f"{folder / MANIFEST} is damaged (not JSON)") from None
    if manifest.get("format") != FORMAT:
        raise CliError(USAGE, f"{folder} is not a {FORMAT} backup")
    return manifest


def check_backup(folder: Path, manifest: dict[str, Any]) -> None:
    """Every checksum of the backup itself, before anything of the station is touched."""
    entries = manifest["files"]
    progress = Progress("check", sum(e["size"] for e in entries))
    bad: list[str] = []
    try:
        if sha256_file(folder / DUMP) != manifest["database"]["sha256"]:
            bad.append(DUMP)
        for entry in entries:
            progress.note(entry["path"][-60:])
            path = folder / FILES / entry["path"]
            if not path.is_file() or sha256_file(path) != entry["sha256"]:
                bad.append(entry["path"])
            progress.advance(entry["size"])
    finally:
        progress.close()
    if bad:
        raise CliError(NO, f"the backup is damaged: {len(bad)} files differ: {', '.join(bad[:5])}")


async def _refuse_unless_empty(target: Target) -> None:
    conn = await _connect(target.database_url)
    try:
        tables = await _tables(conn)
    finally:
        await conn.close()
    if tables:
        raise CliError(
            NOT_EMPTY,
            f"the database is not empty ({len(tables)} tables, e.g. {tables[0]}): restore goes "
            "into a new, empty database only (stop every service, create it with createdb)",
        )
    if target.media_root.exists() and next(store_files(target.media_root), None) is not None:
        raise CliError(
            NOT_EMPTY, f"the media store {target.media_root} holds files: restore needs it empty"
        )


async def _verify_database(target: Target, manifest: dict[str, Any]) -> list[str]:
    conn = await _connect(target.database_url)
    try:
        counts = await _row_counts(conn)
        settings = await _station_settings(conn)
    finally:
        await conn.close()
    problems = [
        f"table {table}: {counts.get(table)} rows, the backup has {n}"
        for table, n in manifest["tables"].items()
        if counts.get(table) != n
    ]
    if settings != manifest["station_settings"]:
        problems.append("station settings differ from the backup's")
    return problems


def restore(args: argparse.Namespace, out: Out) -> int:
    target = target_of(args)
    folder = Path(args.dir)
    manifest = load_manifest(folder)
    asyncio.run(_refuse_unless_empty(target))
    check_backup(folder, manifest)
    Progress("restore", 0).say("restoring the database (pg_restore) …")
    _run_tool(
        ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", str(folder / DUMP)],
        target.database_url,
    )
    entries = manifest["files"]
    progress = Progress("restore", sum(e["size"] for e in entries))
    problems: list[str] = []
    try:
        for entry in entries:
            progress.note(entry["path"][-60:])
            digest = copy_file(
                folder / FILES / entry["path"], target.media_root / entry["path"], progress
            )
            if digest != entry["sha256"]:
                problems.append(f"{entry['path']}: checksum differs after copying")
    finally:
        progress.close()
    problems += verify_files(target.media_root, entries)
    problems += asyncio.run(_verify_database(target, manifest))
    report = {
        "dir": str(folder),
        "tables": len(manifest["tables"]),
        "rows": sum(manifest["tables"].values()),
        "files": len(entries),
        "problems": problems,
    }
    if problems:
        _report(out, args, report, "restore NOT verified:\n  " + "\n  ".join(problems))
        return NO
    _report(
        out,
        args,
        report,
        f"restored {folder}: {report['rows']} rows in {report['tables']} tables and "
        f"{len(entries)} files, verified (row counts, checksums, station settings)",
    )
    return 0


def verify_files(root: Path, entries: list[dict[str, Any]]) -> list[str]:
    """Every file of the manifest in the store, read back with its checksum."""
    problems = []
    for entry in entries:
        path = root / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing after restore")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: checksum differs after restore")
    return problems
