"""RPC handlers of the worklist service; the subscription table is at the bottom."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from cinebridge_common.messages import (
    Reply,
    Request,
    WorklistConformance,
    WorklistEcho,
    WorklistEchoReply,
    WorklistQuery,
    WorklistQueryReply,
    WorklistReconcile,
    WorklistReconcileReply,
    WorklistServerDelete,
    WorklistServersList,
    WorklistServersReply,
    WorklistServerUpsert,
)
from cinebridge_common.station import load_station_settings

from . import metrics, statement
from .lookup import Deps, echo_server, query_worklist
from .repository import ReconcileError


async def handle_worklist_query(req: WorklistQuery, deps: Deps) -> WorklistQueryReply:
    started = time.perf_counter()
    reply = await query_worklist(req, deps)
    metrics.observe_query(reply, time.perf_counter() - started)
    return reply


async def handle_worklist_echo(req: WorklistEcho, deps: Deps) -> WorklistEchoReply:
    return await echo_server(req.server_id, deps)


async def handle_servers_list(req: WorklistServersList, deps: Deps) -> WorklistServersReply:
    return WorklistServersReply(servers=await deps.repo.list_servers())


async def handle_server_upsert(req: WorklistServerUpsert, deps: Deps) -> WorklistServersReply:
    await deps.repo.upsert_server(req.server, req.by)
    return WorklistServersReply(servers=await deps.repo.list_servers())


async def handle_server_delete(req: WorklistServerDelete, deps: Deps) -> WorklistServersReply:
    # Deleting also drops the server's cached entries (ON DELETE CASCADE).
    found = await deps.repo.delete_server(req.server_id)
    servers = await deps.repo.list_servers()
    if not found:
        return WorklistServersReply(
            ok=False, error=f"no worklist server {req.server_id!r}", servers=servers
        )
    return WorklistServersReply(servers=servers)


async def handle_reconcile(req: WorklistReconcile, deps: Deps) -> WorklistReconcileReply:
    try:
        done = await deps.repo.reconcile_study(req.study_id, req.item, req.by or "worklist")
    except ReconcileError as exc:
        # A domain refusal, not a fault: the operator sees why (unknown study, UID taken ...).
        return WorklistReconcileReply(ok=False, error=str(exc), study_id=req.study_id)
    return WorklistReconcileReply(
        study_id=done.study_id,
        study_instance_uid=done.study_instance_uid,
        previous_study_instance_uid=done.previous_study_instance_uid,
    )


async def handle_conformance(_req: WorklistConformance, deps: Deps) -> Reply:
    servers = await deps.repo.list_servers()
    station = await load_station_settings(deps.pool)
    return statement.describe(servers, station, deps.settings)


Handler = Callable[[Any, Deps], Awaitable[Reply]]

#: Request type → handler, and how many requests it answers at once: queries and echoes wait
#: on outside servers for up to their time limit, so one room's slow RIS must not hold up
#: another room's search. app.py serves each on its subject (queue group "worklist").
RPC_HANDLERS: list[tuple[type[Request], Handler, int]] = [
    (WorklistQuery, handle_worklist_query, 4),
    (WorklistEcho, handle_worklist_echo, 4),
    (WorklistServersList, handle_servers_list, 1),
    (WorklistServerUpsert, handle_server_upsert, 1),
    (WorklistServerDelete, handle_server_delete, 1),
    (WorklistReconcile, handle_reconcile, 1),
    (WorklistConformance, handle_conformance, 1),
]
