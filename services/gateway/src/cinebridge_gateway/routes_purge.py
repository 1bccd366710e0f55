"""The local purge policy and the delivery ledger in the API (docs/purge.md): hold and release
of a study (the catalog's `cb.rpc.capture.catalog.hold`, audited), each study's ledger and what
the policy will do with it, and the ops view (free space against the watermarks, a warning when
it is low and nothing may be purged, studies per ledger state)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
from cinebridge_common.bus import Bus, BusError
from cinebridge_common.messages.purge import CatalogHoldStudy, CatalogHoldStudyReply
from cinebridge_common.station import load_station_settings
from fastapi import APIRouter, Request

from . import ledger
from . import ledger_repository as repo
from .deps import Admin, ApiError, Gw, User, client_of, not_found
from .metrics import LEDGER_STUDIES
from .routes_ops import OpsReader

router = APIRouter(prefix="/api/v1", tags=["purge"])

#: The sender answers about at most this many studies at once.
LEDGER_PAGE = 1000
#: How often the gateway refreshes the ledger gauge by itself.
LEDGER_REFRESH_S = 60.0


async def _hold(gw: Gw, study_id: uuid.UUID, held: bool, by: str) -> CatalogHoldStudyReply:
    msg = CatalogHoldStudy(study_id=str(study_id), held=held, by=by)
    try:
        reply = await gw.bus.request(msg, CatalogHoldStudyReply, gw.settings.gateway_rpc_timeout_s)
    except BusError as exc:
        raise ApiError(503, "catalog_unavailable", f"the study catalog (capture): {exc}") from None
    if not reply.ok:
        raise not_found("study")
    return reply


@router.post("/studies/{study_id}/hold")
async def hold_study(
    study_id: uuid.UUID, principal: Admin, request: Request, gw: Gw
) -> dict[str, Any]:
    """Keep the study's local data whatever its commitment and age, until released."""
    return await _set_hold(study_id, True, principal.name, request, gw)


@router.delete("/studies/{study_id}/hold")
async def release_study(
    study_id: uuid.UUID, principal: Admin, request: Request, gw: Gw
) -> dict[str, Any]:
    return await _set_hold(study_id, False, principal.name, request, gw)


async def _set_hold(
    study_id: uuid.UUID, held: bool, by: str, request: Request, gw: Gw
) -> dict[str, Any]:
    reply = await _hold(gw, study_id, held, by)
    action = "study_held" if held else "study_released"
    await gw.repo.audit(gw.pool, by, action, study_id=study_id, client=client_of(request))
    return {"study_id": str(study_id), "held": reply.held, "purge_started": reply.purged}


async def _ledgers(gw: Gw, study_ids: list[uuid.UUID]) -> list[ledger.Ledger]:
    station = await load_station_settings(gw.pool)
    try:
        return await ledger.ledgers(
            gw.pool, gw.bus, study_ids, station, gw.settings.gateway_rpc_timeout_s
        )
    except ledger.SenderUnavailable as exc:
        raise ApiError(503, "sender_unavailable", f"the sender: {exc}") from None


@router.get("/studies/{study_id}/ledger")
async def study_ledger(study_id: uuid.UUID, _: User, gw: Gw) -> dict[str, Any]:
    """The study's ledger state and what the purge policy will do with it, and when."""
    found = await _ledgers(gw, [study_id])
    if not found:
        raise not_found("study")
    entry = found[0]
    return {
        "study_id": entry.study_id,
        "ledger": entry.state,
        "held": entry.held,
        "purge": entry.purge,
        "purge_at": entry.purge_at,
        "purged_at": entry.purged_at,
    }


async def ledger_counts(
    pool: asyncpg.Pool, bus: Bus, timeout_s: float
) -> tuple[list[ledger.Ledger], Counter[str]]:
    """Studies per ledger state (the latest LEDGER_PAGE not purged, every purged one), also set
    as the Prometheus gauge; the gateway refreshes it every LEDGER_REFRESH_S as well."""
    station = await load_station_settings(pool)
    recent = await repo.unpurged_study_ids(pool, LEDGER_PAGE)
    entries = await ledger.ledgers(pool, bus, recent, station, timeout_s)
    counts: Counter[str] = Counter(e.state for e in entries)
    counts["purged"] = await repo.purged_count(pool)
    for state in ledger.STATES:
        LEDGER_STUDIES.labels(state).set(counts.get(state, 0))
    return entries, counts


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@router.get("/ops/purge")
async def ops_purge(_: OpsReader, gw: Gw) -> dict[str, Any]:
    """Free space of the media store against the watermarks, the warning, studies per state."""
    station = await load_station_settings(gw.pool)
    try:
        entries, counts = await ledger_counts(gw.pool, gw.bus, gw.settings.gateway_rpc_timeout_s)
    except ledger.SenderUnavailable as exc:
        raise ApiError(503, "sender_unavailable", f"the sender: {exc}") from None
    usage = await asyncio.to_thread(shutil.disk_usage, _existing(gw.store.root))
    free_percent = 100.0 * usage.free / usage.total if usage.total else 100.0
    low = free_percent < station.purge_low_watermark_percent
    may_go = counts.get("purgeable", 0) + sum(1 for e in entries if e.purge == "scheduled")
    return {
        "enabled": station.purge_enabled,
        "retention_days": station.purge_retention_days,
        "low_watermark_percent": station.purge_low_watermark_percent,
        "high_watermark_percent": station.purge_high_watermark_percent,
        "free_percent": round(free_percent, 3),
        "below_low_watermark": low,
        # The operator must act: nothing the policy may remove would bring space back.
        "warning": low and (not station.purge_enabled or may_go == 0),
        "kept_uncommitted": sum(1 for e in entries if e.purge == "kept-uncommitted"),
        "held": sum(1 for e in entries if e.held),
        "ledger": {state: counts.get(state, 0) for state in ledger.STATES},
    }
