"""Reads of the study catalog (capture's `studies` and `media`, its read model) for the API:
a study, the LOCAL search, a study's status and commitment, its media; and the outbox row a
Save looks for."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
from cinebridge_common.db import create_pool

from .base_repository import Conn, RepositoryBase
from .search_repository import (
    COMMITMENT_SQL,
    DELIVERY_AGG,
    MEDIA_AGG,
    NO_DELIVERIES,
    STATUS_SQL,
    STUDY_COLUMNS,
    StudyFilter,
    build_search,
)

#: Settings of the LOCAL search's sessions. Its statements are few shapes whose parameters are
#: index ranges (`search_repository.prefix_range`): a generic plan serves every value, but
#: PostgreSQL's own choice kept planning each search anew (its estimate of the generic plan is
#: above the custom plans'), which cost more CPU than running it (bench/gateway.py).
SEARCH_SESSION = {"plan_cache_mode": "force_generic_plan"}


async def _nothing_to_reset(_conn: asyncpg.Connection) -> None:
    """A search is one read-only statement: it takes no lock, opens no cursor, listens to
    nothing and sets nothing, so the pool returns its connection as it is."""


async def open_search_pool(
    dsn: str, size: int, application_name: str, command_timeout_s: float
) -> asyncpg.Pool:
    """The LOCAL search's own pool: generic plans, no reset round trip after each search.
    Its connections open on first use (min 0), so a database away at start-up or later costs
    the search a 503 like any other read, not the gateway's start."""
    return await create_pool(
        dsn,
        min_size=0,
        max_size=size,
        application_name=application_name,
        server_settings=SEARCH_SESSION,
        reset=_nothing_to_reset,
        command_timeout_s=command_timeout_s,
    )


class StudyReads(RepositoryBase):
    # -- studies -------------------------------------------------------------------------
    async def get_study(self, conn: Conn, study_id: uuid.UUID) -> dict[str, Any] | None:
        row = await conn.fetchrow(
            f"SELECT {STUDY_COLUMNS}, worklist_item FROM studies WHERE id = $1", study_id
        )
        return dict(row) if row else None

    async def purge_marks(self, conn: Conn, study_id: uuid.UUID) -> tuple[dt.datetime | None, bool]:
        """When the study was purged, and whether a purge of it started (capture's read model
        `capture_purging_studies`): its local files are gone or going (docs/purge.md)."""
        row = await conn.fetchrow(
            """SELECT purged_at, EXISTS (SELECT 1 FROM capture_purging_studies p
                                         WHERE p.study_id = s.id) AS purging
               FROM studies s WHERE s.id = $1""",
            study_id,
        )
        if row is None:
            return None, False
        return row["purged_at"], bool(row["purging"])

    async def _search_repository(self, f: StudyFilter) -> tuple[str, list[Any]] | None:
        return build_search(
            f,
            with_deliveries=await self.has_table("delivery_states"),
            with_received=await self.has_table("received_study_index"),
        )

    async def search_studies(self, f: StudyFilter) -> list[dict[str, Any]]:
        """The LOCAL dialog's page as rows (see `search_repository.build_search`)."""
        built = await self._search_repository(f)
        if built is None:
            return []
        rows = await self._fetch_planned(built[0], built[1], "fetch")
        return [dict(r) for r in rows]

    async def search_studies_json(self, f: StudyFilter) -> str:
        """The same page as a JSON array made by PostgreSQL: the hot path of the LOCAL dialog
        then costs the gateway no row decoding, validation or encoding. Each row has the whole
        `StudyOut` shape: `ledger` is null here (the route fills it in when asked)."""
        built = await self._search_repository(f)
        if built is None:
            return "[]"
        sql = (
            "SELECT coalesce(json_agg(page), '[]'::json)::text"
            f" FROM (SELECT *, NULL::text AS ledger FROM ({built[0]}) found) page"
        )
        return str(await self._fetch_planned(sql, built[1], "fetchval"))

    async def _fetch_planned(self, sql: str, args: list[Any], method: str) -> Any:
        # Through the connection's statement cache on the search's own pool: one round trip,
        # and with its generic plans no planning either. The prefixes are index ranges with
        # parameters (`search_repository.prefix_range`), so a generic plan uses the prefix
        # indexes; with `LIKE $1` alone it walked the whole table for a rare prefix.
        return await getattr(self.search_pool, method)(sql, *args)

    async def study_status(self, study_id: uuid.UUID) -> str:
        deliveries = DELIVERY_AGG if await self.has_table("delivery_states") else NO_DELIVERIES
        value = await self.pool.fetchval(
            f"SELECT {STATUS_SQL} FROM studies s {MEDIA_AGG} {deliveries} WHERE s.id = $1",
            study_id,
        )
        return str(value or "non-converted")

    async def study_commitment(self, study_id: uuid.UUID) -> str | None:
        if not await self.has_table("delivery_states"):
            return None
        value = await self.pool.fetchval(
            f"SELECT {COMMITMENT_SQL} FROM studies s {DELIVERY_AGG} WHERE s.id = $1", study_id
        )
        return str(value) if value is not None else None

    async def uncommitted_studies(
        self, older_than_s: float, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Studies stored at a destination that requires Storage Commitment and not committed
        `older_than_s` after they were sent (the ops page; the sender's read model)."""
        if not await self.has_table("delivery_states"):
            return []
        rows = await self.pool.fetch(
            """SELECT d.study_id, d.destination_name AS destination,
                      min(d.delivered_at) AS sent_at,
                      count(*) AS instances,
                      count(*) FILTER (WHERE d.commitment = 'failed') AS failed,
                      max(d.commitment_reason) AS reason,
                      min(s.patient_id) AS patient_id, min(s.accession_number) AS accession_number
               FROM delivery_states d LEFT JOIN studies s ON s.id = d.study_id
               WHERE d.commitment_required AND d.state IN ('sent', 'warning')
                 AND d.commitment IS DISTINCT FROM 'committed'
                 AND d.commitment IS DISTINCT FROM 'unsupported'
                 AND d.delivered_at < now() - make_interval(secs => $1)
               GROUP BY d.study_id, d.destination_name ORDER BY min(d.delivered_at) LIMIT $2""",
            float(older_than_s),
            limit,
        )
        return [dict(r) for r in rows]

    async def count_studies(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM studies"))

    # -- media ---------------------------------------------------------------------------
    async def list_media(self, study_id: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT id, study_id, room, source, kind, rel_path, size, mime, width, height,
                      frames, duration_s, fps, codec, state, error, captured_at,
                      purged_at
               FROM media WHERE study_id = $1 AND state <> 'deleted' ORDER BY captured_at""",
            study_id,
        )
        return [dict(r) for r in rows]

    async def get_media(self, media_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT id, study_id, kind, rel_path, mime, state, purged_at FROM media WHERE id = $1",
            media_id,
        )
        return dict(row) if row else None

    async def media_to_convert(
        self, conn: Conn, study_id: uuid.UUID
    ) -> list[tuple[uuid.UUID, str]]:
        """(media id, state) of every media item of the study that is not deleted."""
        rows = await conn.fetch(
            "SELECT id, state FROM media WHERE study_id = $1 AND state <> 'deleted' "
            "ORDER BY captured_at",
            study_id,
        )
        return [(r["id"], r["state"]) for r in rows]

    async def outbox_has(self, conn: Conn, msg_id: str) -> bool:
        """Whether a message with this id was enqueued (and not yet purged after publishing)."""
        found = await conn.fetchval("SELECT 1 FROM outbox WHERE msg_id = $1", msg_id)
        return found is not None
