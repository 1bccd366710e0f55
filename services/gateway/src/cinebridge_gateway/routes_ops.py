"""Ops view of the box: aggregated health, per-service metrics, the dashboard summary, and the
server-sent event stream that keeps every browser page live."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Path, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from .deps import ApiError, Gw, User, not_found
from .room_study import known_rooms
from .routes_rooms import room_status

router = APIRouter(tags=["ops"])
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


class HealthOut(BaseModel):
    status: str
    instances: list[InstanceHealthOut]


@router.get("/api/health", response_model=HealthOut)
@router.get("/api/v1/health", response_model=HealthOut)
async def health(_: User, gw: Gw) -> dict[str, Any]:
    """Every service instance from its heartbeats: service, instance, room, last seen, state."""
    return {"status": gw.board.overall(), "instances": gw.board.snapshot()}


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
        infos = await gw.bus.js.consumers_info("CB_JOBS")
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
    if not await gw.repo.has_table("received_instances"):
        return None
    row = await gw.pool.fetchrow(
        "SELECT count(*) AS instances, count(*) FILTER (WHERE received_at > now() - interval "
        "'1 day') AS last_24h FROM received_instances"
    )
    return dict(row) if row else None


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
async def ops_summary(_: User, gw: Gw) -> dict[str, Any]:
    """The ops dashboard: rooms and sources, queues, oldest unsent, failures, disk, health."""
    rooms = await asyncio.gather(*(room_status(gw, r) for r in await known_rooms(gw)))
    return {
        "health": {"status": gw.board.overall(), "instances": gw.board.snapshot()},
        "rooms": rooms,
        "queues": await _job_queues(gw),
        "outbox": await gw.repo.outbox_backlog(),
        "deliveries": await gw.repo.delivery_backlog(),
        "failed_deliveries": await gw.repo.failed_deliveries(),
        "dead_letters": await gw.repo.dead_letter_count(),
        "received": await _received_counts(gw),
        "disk": _disk(gw),
        "studies": await gw.repo.count_studies(),
        "live_listeners": gw.hub.listeners,
    }


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
