"""RPC handlers of the worklist service; the subscription table is at the bottom."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from cinebridge_common.dicom_values import check_dataset
from cinebridge_common.messages import (
    Reply,
    Request,
    WorklistCheckItem,
    WorklistCheckItemReply,
    WorklistConformance,
    WorklistEcho,
    WorklistEchoReply,
    WorklistQuery,
    WorklistQueryReply,
    WorklistServerDelete,
    WorklistServersList,
    WorklistServersReply,
    WorklistServerUpsert,
)
from cinebridge_common.station import load_station_settings

from . import metrics, statement
from .items import item_from_json
from .lookup import Deps, echo_server, query_worklist


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


async def handle_check_item(req: WorklistCheckItem, _deps: Deps) -> WorklistCheckItemReply:
    """The item as the door would have made it from its dataset: a client may send back any
    values, and the study catalog stores them (statement Table 38 mapping)."""
    item = req.item
    checked = item_from_json(check_dataset(item.dataset)[0]) if item.dataset else item
    return WorklistCheckItemReply(item=checked)


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
    (WorklistCheckItem, handle_check_item, 1),
    (WorklistConformance, handle_conformance, 1),
]
