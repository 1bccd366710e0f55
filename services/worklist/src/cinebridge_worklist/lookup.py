"""Use cases behind the RPCs: query a worklist server (with the offline cache) and echo it.

No NATS here: the handlers pass requests in and send the replies these return.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
from cinebridge_common.logging import kv
from cinebridge_common.messages import (
    WorklistEchoReply,
    WorklistQuery,
    WorklistQueryReply,
    WorklistServer,
)
from cinebridge_common.station import StationSettings, load_station_settings
from pydicom.dataset import Dataset

from .matching import matches
from .query import QueryError, SearchFields, ServerKeys, build_identifier
from .repository import WorklistRepository
from .scu import EchoResult, FindLimits, FindResult, Peer, echo, find_worklist
from .settings import WorklistSettings

log = logging.getLogger(__name__)

FindFn = Callable[[Peer, Dataset, FindLimits, str], FindResult]
EchoFn = Callable[[Peer, float], EchoResult]


@dataclass
class Deps:
    """What the handlers need; the SCU functions are injectable for tests."""

    pool: asyncpg.Pool
    repo: WorklistRepository
    settings: WorklistSettings
    find: FindFn = find_worklist
    echo: EchoFn = echo
    detail: dict[str, str] = field(default_factory=dict)


def server_keys(server: WorklistServer, station: StationSettings) -> ServerKeys:
    """C keys from the server; wildcard option and character set default to the station's."""
    wildcards = station.wildcard_matching if server.wildcards is None else server.wildcards
    return ServerKeys(
        modality=server.modality,
        station_ae=server.station_ae,
        wildcards=wildcards,
        character_set=server.character_set or station.worklist_character_set,
    )


def peer_of(server: WorklistServer, station: StationSettings) -> Peer:
    calling = server.calling_ae or station.local_ae_title
    return Peer(server.host, server.port, server.called_ae, calling)


def limits_of(server: WorklistServer, settings: WorklistSettings) -> FindLimits:
    return FindLimits(
        timeout_s=server.timeout_s or settings.worklist_timeout_s,
        max_entries=server.max_entries or settings.worklist_max_entries,
        connect_timeout_s=settings.worklist_connect_timeout_s,
    )


def _fields(req: WorklistQuery) -> SearchFields:
    return SearchFields(
        patient_name=req.patient_name or "",
        patient_id=req.patient_id or "",
        accession_number=req.accession_number or "",
        requested_procedure_id=req.requested_procedure_id or "",
        date_from=req.date_from or "",
        date_to=req.date_to or "",
    )


async def query_worklist(req: WorklistQuery, deps: Deps) -> WorklistQueryReply:
    server = await deps.repo.get_server(req.server_id)
    if server is None or not server.enabled:
        what = f"worklist server {req.server_id!r}" if req.server_id else "a worklist server"
        return WorklistQueryReply(ok=False, outcome="failed", error=f"no enabled {what}")
    station = await load_station_settings(deps.pool)
    keys = server_keys(server, station)
    try:
        identifier = build_identifier(_fields(req), keys)
    except QueryError as exc:
        return WorklistQueryReply(ok=False, outcome="failed", server_id=server.id, error=str(exc))
    result = await asyncio.to_thread(
        deps.find,
        peer_of(server, station),
        identifier,
        limits_of(server, deps.settings),
        keys.character_set,
    )
    deps.detail["last_query"] = f"{server.id}:{result.outcome}"
    if result.outcome == "unreachable":
        return await _offer_cache(server, identifier, result, deps)
    if result.outcome == "complete":
        await deps.repo.cache_items(server.id, result.items)
    return _reply(server, result)


def _reply(server: WorklistServer, result: FindResult) -> WorklistQueryReply:
    usable = result.outcome != "failed"
    return WorklistQueryReply(
        ok=usable,
        error=None if usable else result.detail,
        server_id=server.id,
        outcome=result.outcome,
        items=result.items,
        incomplete=result.incomplete,
        too_many=result.outcome == "too_many",
        warnings=([result.detail] if result.detail else []) + result.warnings,
    )


async def _offer_cache(
    server: WorklistServer, identifier: Dataset, result: FindResult, deps: Deps
) -> WorklistQueryReply:
    """Server down: today's cached entries that match the same search, marked as cached."""
    cached, fetched_at = await deps.repo.cached_items(server.id)
    items = [item for item in cached if matches(item, identifier)]
    log.warning(
        "worklist server unreachable, offering cache",
        extra=kv(server=server.id, cached=len(items), reason=result.detail),
    )
    note = (
        f"showing {len(items)} cached entries from today (last fetched {fetched_at:%H:%M})"
        if fetched_at
        else "no cached entries from today"
    )
    return WorklistQueryReply(
        ok=False,
        error=f"worklist server {server.id} is unreachable: {result.detail}; {note}",
        server_id=server.id,
        outcome="unreachable",
        items=items,
        cached=True,
        cached_at=fetched_at,
        incomplete=True,
        warnings=[note],
    )


async def echo_server(server_id: str, deps: Deps) -> WorklistEchoReply:
    server = await deps.repo.get_server(server_id)
    if server is None:
        return WorklistEchoReply(ok=False, error=f"no worklist server {server_id!r}")
    station = await load_station_settings(deps.pool)
    result = await asyncio.to_thread(
        deps.echo, peer_of(server, station), deps.settings.worklist_echo_timeout_s
    )
    return WorklistEchoReply(reachable=result.reachable, rtt_ms=result.rtt_ms, reason=result.reason)
