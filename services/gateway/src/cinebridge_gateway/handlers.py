"""Bus events the gateway listens to: heartbeats feed the health board, every event the SSE hub
(and the conversion reports, the progress a page loaded mid-conversion shows)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from cinebridge_common.logging import kv
from cinebridge_common.messages import ServiceHeartbeat
from nats.aio.msg import Msg

from .conversion_progress import ConversionProgress
from .health_board import HealthBoard
from .hub import EventHub, LiveEvent

log = logging.getLogger(__name__)


def handle_service_heartbeat(board: HealthBoard) -> Callable[[Msg], Awaitable[None]]:
    async def handle(msg: Msg) -> None:
        try:
            board.record(ServiceHeartbeat.from_bytes(msg.data))
        except ValueError as exc:
            log.warning("undecodable heartbeat", extra=kv(error=str(exc)[:200]))

    return handle


def handle_any_event(
    hub: EventHub, progress: ConversionProgress
) -> Callable[[Msg], Awaitable[None]]:
    async def handle(msg: Msg) -> None:
        # In the one subscription that relays them: a report and its item's outcome are seen
        # in the order the bus delivered them.
        progress.observe(msg.subject, msg.data)
        # Relayed as the bus carried it: events hold ids and states, never patient data.
        hub.publish(LiveEvent(msg.subject, msg.data.decode(errors="replace")))

    return handle


def subscriptions(
    board: HealthBoard, hub: EventHub, progress: ConversionProgress
) -> list[tuple[str, Callable[[Msg], Awaitable[None]]]]:
    """The gateway's subscription table (core subscriptions: live views, not durable work)."""
    return [
        (ServiceHeartbeat.subject, handle_service_heartbeat(board)),
        ("cb.evt.>", handle_any_event(hub, progress)),
    ]
