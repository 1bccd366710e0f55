"""The architecture test: every table has one writer, its owner; other services read only the
owners' published read models; SQL lives in repositories; the owner table of
docs/architecture.md says what tests/architecture/owners.py and the SQL say."""

from __future__ import annotations

import re
from pathlib import Path

from cinebridge_capture import purge as capture_purge
from cinebridge_common import read_models
from cinebridge_gateway import deps as gateway_deps

from . import owners
from .sql_ownership import (
    foreign_reads,
    published_read_models,
    scan,
    scan_reads,
    statements_outside_repositories,
    unused,
    violations,
)

ROOT = Path(__file__).resolve().parents[2]
EXCUSES = [e.key() for e in owners.ALLOWED + owners.PENDING]


def test_every_table_is_written_by_its_owner_only() -> None:
    writes = scan(ROOT)
    assert len(writes) > 100, "the scan found almost no SQL: is the tree where it should be?"
    problems = violations(writes, owners.TABLE_OWNERS, EXCUSES)
    assert not problems, "writes of a table by a part that does not own it:\n" + "\n".join(problems)


def test_other_owners_are_read_through_their_read_models_only() -> None:
    reads = scan_reads(ROOT)
    assert len(reads) > 100, "the scan found almost no reads: is the tree where it should be?"
    readable = set(published_read_models(ROOT)) | set(owners.PUBLISHED_TABLES)
    problems = foreign_reads(reads, owners.TABLE_OWNERS, readable)
    assert not problems, "reads of another owner's table:\n" + "\n".join(problems)


def test_read_models_are_views_their_owners_publish() -> None:
    published = published_read_models(ROOT)
    assert {"converted_instances", "delivery_states", "received_study_index"} <= set(published)
    misplaced = {v: o for v, o in published.items() if owners.TABLE_OWNERS.get(v) != o}
    assert not misplaced, (
        f"read-model views published by a part that does not own them: {misplaced}"
    )
    assert not set(owners.PUBLISHED_TABLES) & set(published)
    assert set(owners.PUBLISHED_TABLES) <= set(owners.TABLE_OWNERS)


def test_readers_know_the_read_models_they_wait_for() -> None:
    """cinebridge_common.read_models lists every published view with its owner, and a service
    that waits for other owners' views (health, 503) names each one its SQL reads."""
    published = published_read_models(ROOT)
    assert read_models.PUBLISHED == published
    reads: dict[str, set[str]] = {}
    for read in scan_reads(ROOT):
        if read.table in published and published[read.table] != read.reader:
            reads.setdefault(read.reader, set()).add(read.table)
    assert set(gateway_deps.READ_MODELS) == reads["gateway"]
    assert set(capture_purge.READ_MODELS) == reads["capture"]


def test_no_excuse_outlives_its_write() -> None:
    stale = unused(scan(ROOT), EXCUSES)
    assert not stale, f"strike these from tests/architecture/owners.py, nothing needs them: {stale}"


def test_sql_lives_in_repositories() -> None:
    found = [
        f"{path}:{line}"
        for path, line in statements_outside_repositories(ROOT)
        if path not in owners.SQL_OUTSIDE_REPOSITORIES
    ]
    assert not found, "SQL outside a repository module:\n" + "\n".join(found)


def test_sql_exemptions_are_still_needed() -> None:
    holding = {path for path, _ in statements_outside_repositories(ROOT)}
    assert set(owners.SQL_OUTSIDE_REPOSITORIES) <= holding


def _owner_table_rows() -> list[tuple[str, list[str]]]:
    """(service, cells) of each row of docs/architecture.md's owner table; the service is the
    row's first `name` (`every service`, `cli`, `gateway`, ...)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("| service | owns (writes) |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        rows.append((names[0] if names else cells[0], cells))
    return rows


def _documented_owners() -> dict[str, str]:
    """table → service of the "owns (writes)" column of docs/architecture.md's owner table."""
    documented: dict[str, str] = {}
    for service, cells in _owner_table_rows():
        for name in re.findall(r"`([a-z_]+)`", cells[1]):
            documented[name] = service
    return documented


def test_architecture_doc_names_what_each_service_reads() -> None:
    """The "reads" column names every other owner's relation the service's SQL reads, and no
    other (besides `station_settings`, read through cinebridge_common.station)."""
    scanned: dict[str, set[str]] = {}
    for read in scan_reads(ROOT):
        owner = owners.TABLE_OWNERS.get(read.table)
        if owner is not None and owner != read.reader:
            scanned.setdefault(read.reader, set()).add(read.table)
    for service, cells in _owner_table_rows():
        if service == "every service":
            continue
        documented = set(re.findall(r"`([a-z_]+)`", cells[2]))
        found = scanned.get(service, set())
        assert documented >= found, f"{service} reads {sorted(found - documented)}, not documented"
        extra = documented - found - {"station_settings"}
        assert not extra, f"{service}'s documented reads {sorted(extra)} are in none of its SQL"


def test_architecture_doc_names_the_same_owners() -> None:
    expected = {
        table: owner
        for table, owner in owners.TABLE_OWNERS.items()
        if owner != "testing" and table != "processed_messages"
    }
    expected |= {t: "every service" for t, o in expected.items() if o == "common"}
    assert _documented_owners() == expected
