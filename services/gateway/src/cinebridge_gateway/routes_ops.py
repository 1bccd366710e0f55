"""Ops view of the box: aggregated health, per-service metrics, the dashboard summary, and the
server-sent event stream that keeps every browser page live."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import shutil
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, TypeVar

import httpx
from cinebridge_common.db import DB_DOWN
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from . import received_repository
from .deps import SESSION_COOKIE, ApiError, Gateway, Gw, User, current_principal, not_found
from .room_study import known_rooms
from .routes_rooms import room_status
from .security import digest

router = APIRouter(tags=["ops"])
T = TypeVar("T")
UNAVAILABLE: tuple[type[Exception], ...] = (TimeoutError, *DB_DOWN)
Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.@-]{1,128}$")]
SSE_KEEPALIVE_S = 15.0
SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Event stream", "content": {"text/event-stream": {}}}
}


class InstanceHealthOut(BaseModel):
    service: str
    instance: str
    room: str | None
    version: str
    state: str
    last_seen: dt.datetime
    age_s: float
    started_at: dt.datetime
    detail: dict[str, str]
    health_url: str | None
    #: Times the process was seen to start again while this gateway ran, the last time, and
    #: how the run before ended (`stopped`, or `ended unexpectedly`: killed or crashed).
    restarts: int = 0
    restarted_at: dt.datetime | None = None
    previous_end: str | None = None


class ComponentOut(BaseModel):
    state: str  # up, down
    detail: str


class HealthOut(BaseModel):
    status: str
    components: dict[str, ComponentOut]
    instances: list[InstanceHealthOut]


#: Session cookies / API tokens (by digest) this process verified against the database, and
#: when: while the database is away, they may still read health and the ops summary (read-only,
#: within the session idle timeout), so an operator sees the outage instead of a login error.
_VERIFIED: dict[str, float] = {}


def _credential(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return "t:" + digest(auth[7:].strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    return "s:" + digest(cookie) if cookie else None


async def ops_reader(request: Request, gw: Gw) -> None:
    """A logged-in user or API token; during a database outage, one verified before."""
    key = _credential(request)
    try:
        await current_principal(request, gw)
    except DB_DOWN:
        seen = _VERIFIED.get(key or "")
        if seen is None or time.monotonic() - seen > gw.settings.gateway_session_idle_s:
            raise
        return
    if key is not None:
        if len(_VERIFIED) >= 10_000:
            _VERIFIED.clear()
        _VERIFIED[key] = time.monotonic()


async def health_reader(request: Request, gw: Gw) -> None:
    """Who may read health: anyone when it is public by setting, the health token (compared
    without the database, so it works during an outage), or an ops reader."""
    if gw.settings.gateway_public_health:
        return
    token = gw.settings.gateway_health_token
    auth = request.headers.get("authorization", "")
    if token is not None and auth.lower().startswith("bearer "):
        if hmac.compare_digest(auth[7:].strip().encode(), token.get_secret_value().encode()):
            return
    await ops_reader(request, gw)


OpsReader = Annotated[None, Depends(ops_reader)]
HealthReader = Annotated[None, Depends(health_reader)]


def health_view(gw: Gateway) -> dict[str, Any]:
    """The box's health without the database: PostgreSQL and NATS as this gateway sees them
    (probed every second), and every service instance from its heartbeats."""
    components = {}
    for name, state in gw.dependencies.snapshot().items():
        up = state == "up"
        components[name] = {"state": "up" if up else "down", "detail": state}
    status = gw.board.overall()
    if any(c["state"] != "up" for c in components.values()):
        status = "degraded"
    return {"status": status, "components": components, "instances": gw.board.snapshot()}


@router.get("/api/health", response_model=HealthOut)
@router.get("/api/v1/health", response_model=HealthOut)
async def health(_: HealthReader, gw: Gw) -> dict[str, Any]:
    """PostgreSQL and NATS as components, and every service instance from its heartbeats:
    service, instance, room, last seen, state (a service that lost a dependency is degraded
    and its detail names it). Served without the database."""
    return health_view(gw)


@router.get(
    "/api/v1/services/{service}/{instance}/metrics",
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
async def service_metrics(service: Name, instance: Name, _: User, gw: Gw) -> PlainTextResponse:
    """The Prometheus metrics of one service instance (its health endpoint, relayed)."""
    base = gw.board.health_url(service, instance)
    if base is None:
        raise not_found("service instance")
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            upstream = await client.get(f"{base}/metrics")
    except httpx.HTTPError as exc:
        raise ApiError(502, "metrics_unavailable", f"{service}@{instance}: {exc!r}") from None
    return PlainTextResponse(
        upstream.text[:5_000_000], upstream.status_code, media_type="text/plain; version=0.0.4"
    )


async def _job_queues(gw: Gw) -> list[dict[str, Any]]:
    with contextlib.suppress(Exception):
        infos = await asyncio.wait_for(gw.bus.js.consumers_info("CB_JOBS"), 2.0)
        return [
            {
                "consumer": i.name,
                "pending": i.num_pending or 0,
                "in_flight": i.num_ack_pending or 0,
                "redelivered": i.num_redelivered or 0,
            }
            for i in infos
        ]
    return []


async def _received_counts(gw: Gw) -> dict[str, Any] | None:
    if not await gw.repo.has_table("received_totals"):
        return None
    return await received_repository.received_counts(gw.pool)


def _disk(gw: Gw) -> dict[str, Any]:
    root = gw.store.root
    while not root.exists() and root != root.parent:
        root = root.parent
    usage = shutil.disk_usage(root)
    return {
        "path": str(gw.store.root),
        "total_bytes": usage.total,
        "free_bytes": usage.free,
        "free_fraction": round(usage.free / usage.total, 4) if usage.total else None,
    }


@router.get("/api/v1/ops/summary")
async def ops_summary(_: OpsReader, gw: Gw) -> dict[str, Any]:
    """The ops dashboard: rooms and sources, queues, oldest unsent, failures, disk, health."""
    rooms = await asyncio.gather(*(room_status(gw, r) for r in await known_rooms(gw)))
    return {
        "health": health_view(gw),
        "rooms": rooms,
        "queues": await _job_queues(gw),
        # What the database holds is null while it is away; health above says so.
        "outbox": await _from_db(gw.repo.outbox_backlog()),
        "deliveries": await _from_db(gw.repo.delivery_backlog()),
        "failed_deliveries": await _from_db(gw.repo.failed_deliveries()),
        "uncommitted": await _from_db(
            gw.repo.uncommitted_studies(gw.settings.gateway_commitment_overdue_s)
        ),
        "uncommitted_after_s": gw.settings.gateway_commitment_overdue_s,
        "dead_letters": await _from_db(gw.repo.dead_letter_count()),
        "received": await _from_db(_received_counts(gw)),
        "disk": _disk(gw),
        "studies": await _from_db(gw.repo.count_studies()),
        "live_listeners": gw.hub.listeners,
    }


async def _from_db(query: Awaitable[T]) -> T | None:
    try:
        return await asyncio.wait_for(query, 3.0)
    except UNAVAILABLE:
        return None


@router.get(
    "/api/events",
    responses={200: {"description": "Event stream", "content": {"text/event-stream": {}}}},
)
@router.get(
    "/api/v1/events",
    responses={200: {"description": "Event stream", "content": {"text/event-stream": {}}}},
)
async def events(request: Request, _: User, gw: Gw) -> StreamingResponse:
    """Server-sent events: every `cb.evt.>` message, `event:` = subject, `data:` = JSON."""

    async def stream() -> AsyncIterator[str]:
        async with gw.hub.listen() as queue:
            yield "retry: 3000\n: connected\n\n"
            while not await request.is_disconnected():
                try:
                    event = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if event is None:
                    return
                yield f"event: {event.subject}\ndata: {event.data}\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
