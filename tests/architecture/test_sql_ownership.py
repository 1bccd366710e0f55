"""The architecture test: every table has one writer, its owner; SQL lives in repositories; the
owner table of docs/architecture.md says what tests/architecture/owners.py says."""

from __future__ import annotations

import re
from pathlib import Path

from . import owners
from .sql_ownership import scan, statements_outside_repositories, unused, violations

ROOT = Path(__file__).resolve().parents[2]
EXCUSES = [e.key() for e in owners.ALLOWED + owners.PENDING]


def test_every_table_is_written_by_its_owner_only() -> None:
    writes = scan(ROOT)
    assert len(writes) > 100, "the scan found almost no SQL: is the tree where it should be?"
    problems = violations(writes, owners.TABLE_OWNERS, EXCUSES)
    assert not problems, "writes of a table by a part that does not own it:\n" + "\n".join(problems)


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


def _documented_owners() -> dict[str, str]:
    """table → service of the "owns (writes)" column of docs/architecture.md's owner table."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("| service | owns (writes) |", 1)[1].split("\n\n", 1)[0]
    documented: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        service = cells[0].strip("`")
        for name in re.findall(r"`([a-z_]+)`", cells[1]):
            documented[name] = service
    return documented


def test_architecture_doc_names_the_same_owners() -> None:
    expected = {
        table: owner
        for table, owner in owners.TABLE_OWNERS.items()
        if owner != "testing" and table != "processed_messages"
    }
    expected |= {t: "every service" for t, o in expected.items() if o == "common"}
    assert _documented_owners() == expected
