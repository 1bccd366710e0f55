"""Use cases behind the RPCs: query a worklist server (with the offline cache) and echo it.

No NATS here: the handlers pass requests in and send the replies these return.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
from cinebridge_common.logging import kv
from cinebridge_common.messages import (
    WorklistEchoReply,
    WorklistItem,
    WorklistQuery,
    WorklistQueryReply,
    WorklistServer,
)
from cinebridge_common.messages.worklist import encode_reply
from cinebridge_common.station import StationSettings, load_station_settings
from pydantic import PrivateAttr
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
    #: Who holds an MPPS step's lease (this process).
    owner: str = "worklist"
    #: Cache writes in flight (kept referenced until done).
    background: set[asyncio.Task[None]] = field(default_factory=set)


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
    """One server (`server_id`), or every enabled server at once when it is None."""
    if req.server_id:
        server = await deps.repo.get_server(req.server_id)
        servers = [server] if server is not None and server.enabled else []
    else:
        servers = [s for s in await deps.repo.list_servers() if s.enabled]
    if not servers:
        what = f"worklist server {req.server_id!r}" if req.server_id else "worklist server"
        return WorklistQueryReply(ok=False, outcome="failed", error=f"no enabled {what}")
    station = await load_station_settings(deps.pool)
    replies = await asyncio.gather(*(_query_one(req, s, station, deps) for s in servers))
    return replies[0] if len(replies) == 1 else merge_replies(list(replies))


async def _query_one(
    req: WorklistQuery, server: WorklistServer, station: StationSettings, deps: Deps
) -> WorklistQueryReply:
    keys = server_keys(server, station)
    fields = _fields(req)
    try:
        identifier = build_identifier(fields, keys)
    except QueryError as exc:
        return WorklistQueryReply(ok=False, outcome="failed", server_id=server.id, error=str(exc))
    peer, limits = peer_of(server, station), limits_of(server, deps.settings)
    result = await asyncio.to_thread(deps.find, peer, identifier, limits, keys.character_set)
    if result.outcome == "complete" and not result.items and keys.wildcards and _has_p_key(req):
        # Some servers take '*' literally on some keys (DCMTK: Patient ID). An exact match is
        # a subset of the partial one, so asking again exactly can only find the right entries.
        exact_keys = dataclasses.replace(keys, wildcards=False)
        exact_identifier = build_identifier(fields, exact_keys)
        exact = await asyncio.to_thread(
            deps.find, peer, exact_identifier, limits, keys.character_set
        )
        if exact.items:
            exact.warnings.insert(0, "no partial matches; exact matches shown")
            result, identifier = exact, exact_identifier
    deps.detail[f"last_query_{server.id}"] = result.outcome
    if result.outcome == "unreachable":
        return await _offer_cache(server, identifier, result, deps)
    flagged = log_flags(server, result.items)
    if flagged:
        result.warnings.append(f"{flagged} entries have flagged values (marked in the list)")
    reply = EncodedReply.of(_reply(server, result))
    if result.outcome == "complete":
        # Written beside the reply, not before it: the operator waits for the list, not for
        # the cache (1,000 entries take a few hundred ms to store).
        _cache_later(deps, server.id, reply.items, reply.item_texts)
    return reply


class EncodedReply(WorklistQueryReply):
    """A reply whose entries are serialized once, for the bus and for the day's cache alike:
    serializing 1,000 entries (~4 KB each) costs ~45 ms of CPU each time. On the bus the
    entries come last, one per line (`encode_reply`), so the gateway keeps each one's text
    without parsing the answer; any JSON reader reads it as `WorklistQueryReply.to_bytes`."""

    _texts: list[str] = PrivateAttr(default_factory=list)
    #: The entries the texts were made of (a copy with other entries serializes them again).
    _encoded: list[WorklistItem] | None = PrivateAttr(default=None)

    @classmethod
    def of(cls, reply: WorklistQueryReply) -> EncodedReply:
        encoded = cls.model_construct(reply.model_fields_set, **dict(reply))
        encoded._texts = [item.json_text() for item in encoded.items]
        encoded._encoded = encoded.items
        return encoded

    @property
    def item_texts(self) -> list[str]:
        return self._texts

    def to_bytes(self) -> bytes:
        if self._encoded is not self.items:
            return super().to_bytes()
        return encode_reply(self, self._texts)


#: Flagged entries logged one by one per query; the rest are counted.
LOGGED_FLAGS = 20


def log_flags(server: WorklistServer, items: list[WorklistItem]) -> int:
    """Log the flagged values of an answer with the server's name (the values themselves only
    at DEBUG: they are patient data); returns how many entries have flags."""
    flagged = [item for item in items if item.flags]
    for item in flagged[:LOGGED_FLAGS]:
        problems = "; ".join(f"{f.tag} {f.keyword}: {f.problem} → {f.action}" for f in item.flags)
        log.warning(
            "worklist entry with invalid values",
            extra=kv(server=server.id, host=server.host, item_key=item.item_key, flags=problems),
        )
        log.debug(
            "worklist values as received",
            extra=kv(
                server=server.id, item_key=item.item_key, values=[f.value for f in item.flags]
            ),
        )
    if len(flagged) > LOGGED_FLAGS:
        log.warning(
            "more worklist entries with invalid values",
            extra=kv(server=server.id, entries=len(flagged) - LOGGED_FLAGS),
        )
    return len(flagged)


#: How long a cache write waits, so that the reply is sent before the CPU goes to the cache.
CACHE_DELAY_S = 0.5


def _cache_later(
    deps: Deps, server_id: str, items: list[WorklistItem], texts: list[str] | None = None
) -> None:
    async def run() -> None:
        try:
            await asyncio.sleep(CACHE_DELAY_S)  # the reply goes out first
            await deps.repo.cache_items(server_id, items, texts)
        except Exception as exc:
            log.warning("worklist cache not written", extra=kv(server=server_id, error=repr(exc)))

    task = asyncio.create_task(run())
    deps.background.add(task)
    task.add_done_callback(deps.background.discard)


def _has_p_key(req: WorklistQuery) -> bool:
    return any(
        (value or "").strip("* ")
        for value in (
            req.patient_name,
            req.patient_id,
            req.accession_number,
            req.requested_procedure_id,
        )
    )


def by_schedule(items: list[WorklistItem]) -> list[WorklistItem]:
    """Scheduled date and time, then name: the order a clinician scans a day's list in (the
    servers answer in file or database order)."""

    def key(item: WorklistItem) -> tuple[str, str, str]:
        return (
            item.scheduled_procedure_step_start_date or "",
            item.scheduled_procedure_step_start_time or "",
            item.patient_name or "",
        )

    return sorted(items, key=key)


def _reply(server: WorklistServer, result: FindResult) -> WorklistQueryReply:
    usable = result.outcome != "failed"
    return WorklistQueryReply(
        ok=usable,
        error=None if usable else result.detail,
        server_id=server.id,
        outcome=result.outcome,
        items=by_schedule(result.items),
        incomplete=result.incomplete,
        too_many=result.outcome == "too_many",
        warnings=([result.detail] if result.detail else []) + result.warnings,
    )


async def _offer_cache(
    server: WorklistServer, identifier: Dataset, result: FindResult, deps: Deps
) -> WorklistQueryReply:
    """Server down: today's cached entries that match the same search, marked as cached.

    With cached entries the reply is `ok` (a procedure can start) and the first warning says
    the server is unreachable; without any it is an error.
    """
    cached, fetched_at = await deps.repo.cached_items(server.id)
    items = [item for item in cached if matches(item, identifier)]
    log.warning(
        "worklist server unreachable, offering cache",
        extra=kv(server=server.id, cached=len(items), reason=result.detail),
    )
    down = f"worklist server {server.id} is unreachable: {result.detail}"
    if fetched_at is None:
        return WorklistQueryReply(
            ok=False,
            error=f"{down}; no cached entries from today",
            server_id=server.id,
            outcome="unreachable",
            cached=True,
            incomplete=True,
        )
    note = f"showing cached entries from today (last fetched {fetched_at:%H:%M} UTC)"
    warnings = [f"{down}; {note}"]
    # The day's cache grows with every search: the same cap as a live answer.
    cap = limits_of(server, deps.settings).max_entries
    if len(items) > cap:
        warnings.append(
            f"more than {cap} cached entries match: too many results, narrow the search"
        )
        items = items[:cap]
    return WorklistQueryReply(
        ok=True,
        server_id=server.id,
        outcome="unreachable",
        items=items,
        cached=True,
        cached_at=fetched_at,
        incomplete=True,
        too_many=len(warnings) > 1,
        warnings=warnings,
    )


#: The outcome reported for several servers: the most serious one.
_SEVERITY = ("failed", "unreachable", "timeout", "partial", "too_many", "complete")


def merge_replies(replies: list[WorklistQueryReply]) -> WorklistQueryReply:
    """Several servers' answers as one list: entries de-duplicated by item key, flags OR-ed,
    warnings and errors prefixed with the server id."""
    items: dict[str, WorklistItem] = {}
    for reply in replies:
        for item in reply.items:
            items.setdefault(item.item_key or str(len(items)), item)
    outcome = min((r.outcome or "failed" for r in replies), key=lambda o: _SEVERITY.index(o))
    errors = [f"{r.server_id}: {r.error}" for r in replies if r.error]
    usable = any(r.ok for r in replies)
    cached_at = [r.cached_at for r in replies if r.cached_at is not None]
    return WorklistQueryReply(
        ok=usable,
        error=None if usable else "; ".join(errors),
        outcome=outcome,
        items=by_schedule(list(items.values())),
        incomplete=any(r.incomplete for r in replies),
        too_many=any(r.too_many for r in replies),
        cached=any(r.cached for r in replies),
        cached_at=min(cached_at) if cached_at else None,
        warnings=(errors if usable else [])
        + [f"{r.server_id}: {w}" for r in replies for w in r.warnings],
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
