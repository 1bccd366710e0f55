"""The send queue: the `deliveries` table, worked by one worker per enabled destination.

Every sender process runs a `DeliveryQueue`. Each of its workers claims its destination's due
deliveries under a lease (`queue_repository.claim_due`, `FOR UPDATE SKIP LOCKED`), sends them as
one batch (`batches.send_batch`), and loops; with nothing due it sleeps until the earliest
`next_attempt_at` of its destination (or the end of a lease another sender holds), or until it
is woken. Several sender processes share a destination this way, and the rows of a killed one
come back when its leases end.

Wake-ups come from PostgreSQL: the triggers of `R_sender_queue.sql` NOTIFY the destination's id
when a delivery becomes queued (whoever queued it: an announcement, Forward, a retry, a
Storage Commitment re-send) and when a destination is added, edited or deleted. One pooled
connection per process LISTENs; a notification is delivered at commit, so a woken worker
always finds the row. When that connection is lost (a PostgreSQL restart) notifications may be
missed: after it is back every worker looks at its queue again, and a worker never sleeps
longer than a lease without looking.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field

from cinebridge_common.listen import PgListener
from cinebridge_common.logging import kv
from cinebridge_common.supervise import backoff_delay, cancel_and_wait

from . import destination_repository as destinations
from . import queue_repository as qrepo
from . import repository as repo
from .batches import SenderDeps, send_batch

log = logging.getLogger(__name__)

QUEUE_CHANNEL = "cb_sender_queue"
DESTINATIONS_CHANNEL = "cb_sender_destinations"
#: Nothing claimable although something is due: a row another transaction is claiming right
#: now. Look again shortly rather than spin.
_BUSY_S = 0.05


@dataclass
class _Worker:
    task: asyncio.Task[None]
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class DeliveryQueue:
    """Keeps a worker per enabled destination and wakes it on notification."""

    def __init__(self, deps: SenderDeps, stop: asyncio.Event) -> None:
        self.deps = deps
        self.stop = stop
        self.workers: dict[uuid.UUID, _Worker] = {}
        #: Destinations changed, or the listening connection was lost: follow them again.
        self.changed = asyncio.Event()
        #: At most `CB_SENDER_WORKERS` batches at once in this process (each to a destination).
        self.slots = asyncio.Semaphore(max(1, deps.settings.sender_workers))
        #: The longest a worker sleeps without looking at its queue.
        self.idle_s = max(deps.settings.sender_lease_s, 1.0)

    async def run(self) -> None:
        """Follow the destinations until `stop`; a database error is logged once per outage and
        the pass retried with backoff, while the workers go on with their own retries."""
        listener = PgListener(
            self.deps.pool,
            {QUEUE_CHANNEL: self._on_queued, DESTINATIONS_CHANNEL: self._on_destination},
            on_lost=self.changed.set,
            name="send-queue",
        )
        failures = 0
        try:
            while not self.stop.is_set():
                self.changed.clear()
                try:
                    if await listener.ensure():
                        # Notifications sent while nobody listened are lost: look again.
                        for worker in self.workers.values():
                            worker.wake.set()
                    await self._follow()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    if failures == 1:
                        log.warning("send queue: pass failed", extra=kv(error=repr(exc)))
                    await self._pause(self.changed, backoff_delay(failures, 0.25, 5.0))
                    continue
                if failures:
                    log.info("send queue: recovered", extra=kv(failed_passes=failures))
                    failures = 0
                await self._pause(self.changed, self.idle_s)
        finally:
            await listener.close()
            await self._stop_workers()

    async def _follow(self) -> None:
        """A worker for each enabled destination; one deleted or disabled is woken to end."""
        enabled = set(await destinations.enabled_destination_ids(self.deps.pool))
        for key, worker in list(self.workers.items()):
            if worker.task.done():
                del self.workers[key]
            elif key not in enabled:
                worker.wake.set()
        for key in enabled - set(self.workers):
            wake = asyncio.Event()
            task = asyncio.create_task(self._work(key, wake), name=f"send-{key}")
            self.workers[key] = _Worker(task, wake)

    async def _work(self, destination_id: uuid.UUID, wake: asyncio.Event) -> None:
        """Claim, send, record; sleep until the next delivery is due or a wake-up."""
        failures = 0
        while not self.stop.is_set():
            wake.clear()
            try:
                wait_s = await self._step(destination_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning(
                        "send worker: step failed",
                        extra=kv(destination=destination_id, error=repr(exc)),
                    )
                wait_s = backoff_delay(failures, 0.5, 5.0)
            else:
                if failures:
                    log.info("send worker: recovered", extra=kv(destination=destination_id))
                    failures = 0
            if wait_s is None:
                log.info("send worker: ended", extra=kv(destination=destination_id))
                self.changed.set()  # followed again: it may have been re-enabled meanwhile
                return
            if wait_s > 0:
                await self._pause(wake, wait_s)

    async def _step(self, destination_id: uuid.UUID) -> float | None:
        """One look at the queue: seconds to sleep (0: look again at once), None to end."""
        deps = self.deps
        destination = await repo.get_destination(deps.pool, str(destination_id))
        if destination is None or not destination.enabled:
            return None
        resting_until = await destinations.destination_retry_at(deps.pool, destination_id)
        if resting_until is not None:
            # The destination failed to associate: the whole queue waits out its backoff, and
            # the next batch takes whatever is due then.
            return min(max(_seconds_until(resting_until), _BUSY_S), self.idle_s)
        settings = deps.settings
        async with self.slots:
            batch = await qrepo.claim_due(
                deps.pool,
                destination_id,
                deps.owner,
                settings.sender_lease_s,
                settings.sender_batch_max,
            )
            if batch:
                await send_batch(deps, destination, batch)
                return 0.0
        due = await qrepo.next_due(deps.pool, destination_id)
        if due is None:
            return self.idle_s
        return min(max(_seconds_until(due), _BUSY_S), self.idle_s)

    async def _pause(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    def _on_queued(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        worker = self._worker(payload)
        if worker is not None:
            worker.wake.set()
        else:
            self.changed.set()  # a destination this process has no worker for yet

    def _on_destination(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        worker = self._worker(payload)
        if worker is not None:
            worker.wake.set()
        self.changed.set()

    def _worker(self, payload: object) -> _Worker | None:
        try:
            return self.workers.get(uuid.UUID(str(payload)))
        except ValueError:
            return None

    async def _stop_workers(self) -> None:
        await cancel_and_wait([worker.task for worker in self.workers.values()], "send workers")
        self.workers.clear()


def _seconds_until(when: dt.datetime) -> float:
    return (when - dt.datetime.now(dt.UTC)).total_seconds()
