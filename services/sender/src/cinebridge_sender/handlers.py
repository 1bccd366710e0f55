"""Thin handlers: load, delegate, decide ack / retry; the subscription tables at the bottom."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from cinebridge_common.bus import Delivery
from cinebridge_common.logging import kv
from cinebridge_common.messages import (
    DestinationDelete,
    DestinationListReply,
    DestinationListRequest,
    DestinationReply,
    DestinationUpsert,
    EchoReply,
    EchoRequest,
    ForwardStudy,
    InstanceCreated,
    Message,
    Reply,
    Request,
    RetryDelivery,
    RetryDeliveryReply,
    SenderConformance,
)
from cinebridge_common.station import load_station_settings

from . import commitment_handlers, scu, statement, stow
from . import delivery_repository as deliveries
from . import destination_repository as destinations
from . import repository as repo
from .batches import SenderDeps, archive_for, peer_for

log = logging.getLogger(__name__)


async def handle_instance_created(msg: InstanceCreated, _d: Delivery, deps: SenderDeps) -> None:
    """Record the instance; queue one delivery per enabled auto-send destination, or per
    destination the announcement names."""
    async with deps.pool.acquire() as conn, conn.transaction():
        await deliveries.record_instance(conn, msg)
        if msg.destination_ids is not None:
            targets = await destinations.existing_destination_ids(conn, msg.destination_ids)
        elif msg.auto_send:
            targets = await destinations.auto_send_destination_ids(conn)
        else:
            return
        queued = await deliveries.ensure_deliveries(
            conn, [uuid.UUID(msg.instance_id)], targets, resend=False
        )
    log.info("instance queued", extra=kv(instance=msg.instance_id, deliveries=queued))


async def handle_forward_study(msg: ForwardStudy, _d: Delivery, deps: SenderDeps) -> None:
    """Statement "Forward": queue the study (or one instance) again to the given destinations;
    the same job key twice does it once."""
    async with deps.pool.acquire() as conn, conn.transaction():
        if await deliveries.forward_done(conn, msg.job_key):
            return
        instances = await deliveries.instance_ids(conn, msg.study_id, msg.instance_id)
        targets = [uuid.UUID(d) for d in msg.destination_ids]
        queued = await deliveries.ensure_deliveries(conn, instances, targets, resend=True)
        await deliveries.mark_forward_done(conn, msg.job_key, queued)
    log.info("forward queued", extra=kv(job=msg.job_key, deliveries=queued))


# -- request/reply ----------------------------------------------------------------------------


async def handle_echo(req: EchoRequest, deps: SenderDeps) -> EchoReply:
    if req.destination_id:
        destination = await repo.get_destination(deps.pool, req.destination_id)
        if destination is None:
            return EchoReply(ok=False, error=f"unknown destination {req.destination_id}")
        if destination.kind == "dicomweb":
            found = await stow.echo(await archive_for(deps, destination), req.timeout_s)
            return EchoReply(reachable=found.reachable, rtt_ms=found.rtt_ms, reason=found.reason)
        peer = await peer_for(deps, destination)
    elif req.ae_title and req.host and req.port:
        calling = req.calling_ae_title or (await _local_ae(deps))
        peer = scu.Peer(req.ae_title, req.host, req.port, calling_ae_title=calling)
    else:
        return EchoReply(ok=False, error="give destination_id, or ae_title, host and port")
    result = await asyncio.to_thread(scu.echo, peer, req.timeout_s)
    return EchoReply(reachable=result.reachable, rtt_ms=result.rtt_ms, reason=result.reason)


async def _local_ae(deps: SenderDeps) -> str:
    return (await load_station_settings(deps.pool)).local_ae_title


async def handle_destination_list(_req: DestinationListRequest, deps: SenderDeps) -> Reply:
    return DestinationListReply(destinations=await destinations.list_destinations(deps.pool))


async def handle_destination_upsert(req: DestinationUpsert, deps: SenderDeps) -> Reply:
    if req.destination.auth != "none" and not req.destination.secret:
        # An edit may leave the secret out to keep the stored one; a new one must give it.
        kept = await destinations.secret_kept(deps.pool, req.destination)
        if not kept:
            what = "password" if req.destination.auth == "basic" else "token"
            return DestinationReply(ok=False, error=f"{req.destination.auth} needs a {what}")
    try:
        saved = await destinations.upsert_destination(deps.pool, req.destination)
    except LookupError as exc:
        return DestinationReply(ok=False, error=str(exc))
    return DestinationReply(destination=saved)


async def handle_destination_delete(req: DestinationDelete, deps: SenderDeps) -> Reply:
    if not await destinations.delete_destination(deps.pool, req.destination_id):
        return DestinationReply(ok=False, error=f"unknown destination {req.destination_id}")
    return DestinationReply()


async def handle_conformance(req: SenderConformance, deps: SenderDeps) -> Reply:
    configured = await destinations.list_destinations(deps.pool)
    return statement.describe(req, configured, await _local_ae(deps), deps.settings)


async def handle_retry_delivery(req: RetryDelivery, deps: SenderDeps) -> Reply:
    async with deps.pool.acquire() as conn, conn.transaction():
        state = await deliveries.retry_now(conn, req.delivery_id)
    if state is None:
        return RetryDeliveryReply(ok=False, error=f"unknown delivery {req.delivery_id}")
    return RetryDeliveryReply(state=state)


JobHandler = Callable[[Any, Delivery, SenderDeps], Awaitable[None]]
RpcHandler = Callable[[Any, SenderDeps], Awaitable[Reply]]

#: (stream, durable, message, handler): durable consumers of the sender.
CONSUMERS: list[tuple[str, str, type[Message], JobHandler]] = [
    ("CB_EVENTS", "sender-instance-created", InstanceCreated, handle_instance_created),
    ("CB_JOBS", "sender-forward", ForwardStudy, handle_forward_study),
    *commitment_handlers.CONSUMERS,
]

#: Request/reply subjects the sender answers.
RPC: list[tuple[type[Request], RpcHandler]] = [
    (EchoRequest, handle_echo),
    (DestinationListRequest, handle_destination_list),
    (DestinationUpsert, handle_destination_upsert),
    (DestinationDelete, handle_destination_delete),
    (RetryDelivery, handle_retry_delivery),
    (SenderConformance, handle_conformance),
    *commitment_handlers.RPC,
]
