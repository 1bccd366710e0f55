"""All SQL of the worklist service: servers, the offline cache (migration 401), reconciliation."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from cinebridge_common.dicom_values import check_dataset, valid_value
from cinebridge_common.messages import StudyChanged, WorklistItem, WorklistServer
from cinebridge_common.outbox import enqueue
from cinebridge_common.uids import is_valid_uid

from .items import item_from_json

_SERVER_COLUMNS = (
    "id",
    "name",
    "host",
    "port",
    "called_ae",
    "calling_ae",
    "modality",
    "station_ae",
    "character_set",
    "wildcards",
    "timeout_s",
    "max_entries",
    "enabled",
    "position",
    "mpps_enabled",
    "mpps_ae",
    "mpps_host",
    "mpps_port",
)
_UPSERT_SERVER = f"""
INSERT INTO worklist_servers ({", ".join(_SERVER_COLUMNS)}, updated_by)
VALUES ({", ".join(f"${i}" for i in range(1, len(_SERVER_COLUMNS) + 2))})
ON CONFLICT (id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _SERVER_COLUMNS[1:])},
    updated_by = EXCLUDED.updated_by, updated_at = now()"""

_CACHE_ITEM = """
INSERT INTO worklist_cache (server_id, item_key, item, sps_date, fetched_at)
VALUES ($1, $2, $3::text::jsonb, $4, now())
ON CONFLICT (server_id, item_key) DO UPDATE SET
    item = EXCLUDED.item, sps_date = EXCLUDED.sps_date, fetched_at = now()"""

_RECONCILE = """
UPDATE studies SET study_instance_uid = $2, origin = 'worklist', patient_name = $3,
    patient_id = $4, patient_birth_date = $5, patient_sex = $6, accession_number = $7,
    study_id = $8, study_description = $9, referring_physician = $10, worklist_item = $11,
    modality = $12, edited = false, updated_at = now()
WHERE id = $1"""


class ReconcileError(ValueError):
    """The study cannot take this worklist item (says which study and why)."""


@dataclass(frozen=True)
class Reconciled:
    study_id: str
    study_instance_uid: str
    previous_study_instance_uid: str


def _server(row: asyncpg.Record) -> WorklistServer:
    return WorklistServer.model_validate({c: row[c] for c in _SERVER_COLUMNS})


class WorklistRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- servers ---------------------------------------------------------------------------
    async def list_servers(self) -> list[WorklistServer]:
        rows = await self.pool.fetch("SELECT * FROM worklist_servers ORDER BY position, id")
        return [_server(row) for row in rows]

    async def get_server(self, server_id: str | None) -> WorklistServer | None:
        """The server by id, or the default (first enabled by position) when id is None."""
        if server_id is None:
            row = await self.pool.fetchrow(
                "SELECT * FROM worklist_servers WHERE enabled ORDER BY position, id LIMIT 1"
            )
        else:
            row = await self.pool.fetchrow(
                "SELECT * FROM worklist_servers WHERE id = $1", server_id
            )
        return _server(row) if row else None

    async def upsert_server(self, server: WorklistServer, by: str | None) -> None:
        values: list[Any] = [getattr(server, c) for c in _SERVER_COLUMNS]
        await self.pool.execute(_UPSERT_SERVER, *values, by)

    async def delete_server(self, server_id: str) -> bool:
        status = await self.pool.execute("DELETE FROM worklist_servers WHERE id = $1", server_id)
        return bool(status.endswith(" 1"))

    # -- offline cache ---------------------------------------------------------------------
    async def cache_items(self, server_id: str, items: list[WorklistItem]) -> None:
        """Keep today's entries of a successful query; drop what was fetched before today."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """DELETE FROM worklist_cache
                   WHERE server_id = $1 AND fetched_at < date_trunc('day', now())""",
                server_id,
            )
            await conn.executemany(
                _CACHE_ITEM,
                [
                    (
                        server_id,
                        item.item_key,
                        # JSON text made by pydantic's serializer: a quarter of the CPU of
                        # a dict for the connection's json.dumps (1,000 entries: ~30 ms, ~115).
                        item.model_dump_json(),
                        item.scheduled_procedure_step_start_date or "",
                    )
                    for item in items
                    if item.item_key
                ],
            )

    async def cached_items(self, server_id: str) -> tuple[list[WorklistItem], dt.datetime | None]:
        """Today's cached entries of a server, and when they were last fetched."""
        rows = await self.pool.fetch(
            """SELECT item, fetched_at FROM worklist_cache
               WHERE server_id = $1 AND fetched_at >= date_trunc('day', now())
               ORDER BY sps_date, item->>'scheduled_procedure_step_start_time', item_key""",
            server_id,
        )
        items = [WorklistItem.model_validate(row["item"]) for row in rows]
        latest = max((row["fetched_at"] for row in rows), default=None)
        return items, latest

    # -- reconciliation --------------------------------------------------------------------
    async def reconcile_study(self, study_id: str, item: WorklistItem, by: str) -> Reconciled:
        """The study takes the item's Study Instance UID and Table 38 data, with its event."""
        try:
            study_uuid = uuid.UUID(study_id)
        except ValueError:
            raise ReconcileError(f"study id {study_id!r} is not a UUID") from None
        # The item comes from a client: its values are checked again as at the door.
        item = item_from_json(check_dataset(item.dataset)[0]) if item.dataset else item
        uid, modality = item.study_instance_uid or "", item.modality or ""
        if not is_valid_uid(uid):
            raise ReconcileError(f"the worklist item has no valid Study Instance UID: {uid!r}")
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT study_instance_uid, origin FROM studies WHERE id = $1 FOR UPDATE",
                study_uuid,
            )
            if row is None:
                raise ReconcileError(f"study {study_id} does not exist")
            previous = str(row["study_instance_uid"])
            if row["origin"] == "worklist" and previous != uid:
                raise ReconcileError(
                    f"study {study_id} is already linked to worklist study {previous}"
                )
            holder = await conn.fetchval(
                "SELECT id FROM studies WHERE study_instance_uid = $1 AND id <> $2",
                uid,
                study_uuid,
            )
            if holder is not None:
                raise ReconcileError(f"study {holder} already has Study Instance UID {uid}")
            await conn.execute(
                _RECONCILE,
                study_uuid,
                uid,
                item.patient_name or "",
                item.patient_id or "",
                item.patient_birth_date or "",
                item.patient_sex or "",
                item.accession_number or "",
                item.requested_procedure_id or "",
                item.requested_procedure_description or "",
                item.referring_physician_name or "",
                item.dataset,
                modality if valid_value("CS", modality) else "",
            )
            event = StudyChanged(study_id=study_id, change="reconciled", by=by)
            await enqueue(conn, event, msg_id=f"study-reconciled:{study_id}:{uid}")
        return Reconciled(study_id, uid, previous)
