"""What every study route checks first: that the study exists, and — for what needs its local
files (media, DICOM, exports, sends, conversion, added files) — that the purge policy has not
removed them (docs/purge.md). A purged study keeps its rows; its files are gone, so a request
for them is answered 410 with the date and why, never a 500 or a half-written result."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from cinebridge_common.station import load_station_settings

from . import ledger
from .deps import ApiError, Gateway, not_found
from .repository import Conn

STUDY_PURGED = "study_purged"


def media_out(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "content_url": f"/api/v1/media/{row['id']}/content"}


async def study_or_404(
    gw: Gateway, study_id: uuid.UUID, conn: Conn | None = None
) -> dict[str, Any]:
    study = await gw.repo.get_study(conn or gw.pool, study_id)
    if study is None:
        raise not_found("study")
    return study


def purged_error(purged_at: dt.datetime | None) -> ApiError:
    if purged_at is not None:
        reason = f"study purged on {purged_at:%Y-%m-%d}: local data removed after commitment"
    else:
        reason = "study being purged: local data removed after commitment"
    return ApiError(410, STUDY_PURGED, f"{reason} (the archive holds it)")


async def refuse_purged(gw: Gateway, study_id: uuid.UUID, conn: Conn | None = None) -> None:
    """410 once a purge of the study started: its files are gone, or going."""
    purged_at, purging = await gw.repo.purge_marks(conn or gw.pool, study_id)
    if purged_at is not None or purging:
        raise purged_error(purged_at)


async def study_with_files(
    gw: Gateway, study_id: uuid.UUID, conn: Conn | None = None
) -> dict[str, Any]:
    """The study, 404 when there is none, 410 when its local files were purged."""
    study = await study_or_404(gw, study_id, conn)
    await refuse_purged(gw, study_id, conn)
    return study


async def ledger_map(gw: Gateway, study_ids: list[uuid.UUID]) -> dict[str, ledger.Ledger] | None:
    """Each study's ledger (docs/purge.md "Ledger"); None when the sender does not answer: a
    page then shows no ledger rather than fail."""
    if not study_ids:
        return {}
    station = await load_station_settings(gw.pool)
    try:
        entries = await ledger.ledgers(
            gw.pool, gw.bus, study_ids, station, gw.settings.gateway_rpc_timeout_s
        )
    except ledger.SenderUnavailable:
        return None
    return {e.study_id: e for e in entries}


def ledger_fields(entry: ledger.Ledger | None) -> dict[str, Any]:
    """The study's ledger state and what the purge policy will do, for a study's answer."""
    if entry is None:
        return {"ledger": None}
    return {
        "ledger": entry.state,
        "held": entry.held,
        "purge": entry.purge,
        "purge_at": entry.purge_at,
        "purged_at": entry.purged_at,
    }


async def study_state(
    gw: Gateway, study_id: uuid.UUID, entry: ledger.Ledger | None
) -> ledger.LedgerState | None:
    """The study's ledger state as far as its items need it: the sender's answer when asked,
    else what the catalog alone tells (purged, or its purge started)."""
    if entry is not None:
        return entry.state
    purged_at, purging = await gw.repo.purge_marks(gw.pool, study_id)
    if purged_at is not None:
        return "purged"
    return "purgeable" if purging else None


def media_with_ledger(
    media: list[dict[str, Any]],
    deliveries: list[dict[str, Any]],
    study: ledger.LedgerState | None,
) -> list[dict[str, Any]]:
    """Each media item with its own ledger state and each destination's (the deliveries of the
    instances made of it)."""
    out = []
    for item in media:
        own = [d for d in deliveries if d.get("media_id") == item["id"]]
        entry = ledger.item_ledger(item, own, study)
        out.append({**media_out(item), "ledger": entry.state, "destinations": entry.destinations})
    return out
