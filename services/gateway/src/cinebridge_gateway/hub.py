"""Fan-out of bus events to browser SSE streams, each with a bounded queue that drops oldest."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .metrics import SSE_LISTENERS


@dataclass(frozen=True)
class LiveEvent:
    subject: str
    data: str  # JSON text as it came from the bus


class EventHub:
    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._queues: set[asyncio.Queue[LiveEvent | None]] = set()
        self.dropped = 0

    @property
    def listeners(self) -> int:
        return len(self._queues)

    def publish(self, event: LiveEvent) -> None:
        for queue in self._queues:
            if queue.full():
                # A browser that does not keep up loses its oldest events, never blocks the bus.
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)

    def close(self) -> None:
        """Ends every stream (shutdown)."""
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[LiveEvent | None]]:
        queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(self.queue_size)
        self._queues.add(queue)
        SSE_LISTENERS.set(len(self._queues))
        try:
            yield queue
        finally:
            self._queues.discard(queue)
            SSE_LISTENERS.set(len(self._queues))
