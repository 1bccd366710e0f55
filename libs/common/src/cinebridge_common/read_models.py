"""Other owners' read models, and a clear state while one does not exist yet.

Each owner publishes the views other services read in its repeatable `R_<owner>_read_model.sql`
(docs/architecture.md, "One owner per table"), created by the owner's own migrations. A
production image installs one service and so only its own migrations: on a new station, a
service that reads another owner's view before that owner first started finds no such relation.
That is a state of the station, not a fault of the reader: it says "waiting for <owner> to
start" (health detail, HTTP 503) instead of failing with a database error, and works as soon as
the owner has run its migrations.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import asyncpg

from .db import Connection

#: view → owner of every view an owner publishes in its `R_<owner>_read_model.sql` (the
#: architecture test checks this list against the files).
PUBLISHED: dict[str, str] = {
    "capture_served_rooms": "capture",
    "capture_purging_studies": "capture",
    "converted_instances": "converter",
    "delivery_states": "sender",
    "delivery_attempt_log": "sender",
    "destination_names": "sender",
    "sender_instances": "sender",
    "received_study_index": "scp",
    "received_totals": "scp",
    "mpps_step_states": "worklist",
}

#: What PostgreSQL raises for a relation or a column that does not exist (SQLSTATE 42P01,
#: 42703): an owner's view not yet created, or a column of the study catalog that capture's
#: migrations add.
UNDEFINED = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError)
_RELATION = re.compile(r'relation "(?:\w+\.)?(\w+)" does not exist')


class ReadModelMissing(RuntimeError):
    """Read models (view → owner) that do not exist yet; the message says whom it waits for."""

    def __init__(self, missing: Mapping[str, str]) -> None:
        self.missing = dict(missing)
        super().__init__(waiting_message(self.missing))


def waiting_message(missing: Mapping[str, str]) -> str:
    """ "waiting for converter to start (its read model converted_instances does not exist
    yet)", one clause per owner."""
    by_owner: dict[str, list[str]] = {}
    for view, owner in sorted(missing.items()):
        by_owner.setdefault(owner, []).append(view)
    clauses = []
    for owner, views in sorted(by_owner.items()):
        if len(views) == 1:
            what = f"its read model {views[0]} does not exist yet"
        else:
            what = f"its read models {', '.join(views)} do not exist yet"
        clauses.append(f"waiting for {owner} to start ({what})")
    return "; ".join(clauses)


async def missing_read_models(
    db: Connection | asyncpg.Pool, views: Iterable[str]
) -> dict[str, str]:
    """view → owner of each of `views` that does not exist in the database yet."""
    wanted = sorted(set(views))
    rows = await db.fetch(
        "SELECT v FROM unnest($1::text[]) AS v WHERE to_regclass(v) IS NULL", wanted
    )
    return {r["v"]: PUBLISHED.get(r["v"], "its owner") for r in rows}


async def require_read_models(db: Connection | asyncpg.Pool, views: Iterable[str]) -> None:
    """Raise ReadModelMissing unless every one of `views` exists."""
    missing = await missing_read_models(db, views)
    if missing:
        raise ReadModelMissing(missing)


async def explain_undefined(
    db: Connection | asyncpg.Pool, exc: BaseException, views: Iterable[str]
) -> ReadModelMissing | None:
    """The read models behind an undefined relation or column, or None when the error is not
    theirs (a genuine fault). A named published view is the answer itself; a missing column
    (the study catalog before capture first ran) is explained by which of `views` — the ones the
    reader depends on — do not exist yet."""
    if not isinstance(exc, UNDEFINED):
        return None
    match = _RELATION.search(str(exc))
    named = match.group(1) if match else None
    missing = await missing_read_models(db, [named] if named in PUBLISHED else views)
    return ReadModelMissing(missing) if missing else None
