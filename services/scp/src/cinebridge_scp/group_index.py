"""Group commit of index rows: one transaction for the instances ready at the same moment.

An association thread hands its checked instance over (`GroupIndexer.begin`) before it makes
the file durable; while it fsyncs the file, renames it and fsyncs the directory, the event loop
already runs the row's statement in an open transaction. That transaction commits only once
every instance in it has reported its file durable (`Ticket.durable`), and each thread gets its
outcome after the commit. So a committed row still always names a durable file, and 0x0000 still
follows both the fsyncs and the commit (ingest.py); what changes is that the statement's round
trip overlaps the fsyncs instead of following them.

A group of one instance takes that path only while a single association stores (one sender
hands over one instance at a time, and the overlap shortens each of its C-STOREs). While
several do, CPU is what bounds them, and BEGIN and COMMIT cost the event loop about as much as
the statement: a lone instance's statement then waits for its file and commits by itself
(docs/benchmarks.md, "The SCP's CPU per instance since 2026-11-29").

Instances handed over while a group is being written form the next group: one statement and
one commit for all of them, whatever the number of associations (concurrent fsyncs run in
their own threads and are never queued behind each other). A group whose files were all
durable before its statement was sent needs no explicit transaction (one round trip). An
instance that is abandoned (its fsync failed, its thread gave up) rolls its group back and the
others are written again without it; a group the database refuses is written again one
instance at a time, so that only the culprit fails (a deadlock between two worker processes
indexing two new studies in crossed order ends the same way).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import threading
from collections.abc import Callable, Sequence

import asyncpg
from cinebridge_common.logging import kv

from . import metrics, repository
from .ingest import IndexOutcome, InstanceFacts

log = logging.getLogger(__name__)


class _State(enum.Enum):
    WRITING = "writing"  # handed over; its file not yet durable
    DURABLE = "durable"  # its file, rename and directory are fsync'd
    ABANDONED = "abandoned"  # its thread gave up: its row must never commit
    COMMITTING = "committing"  # its group's commit is under way: too late to abandon


class Abandoned(Exception):
    """The instance was given up before its group committed: no row was written."""


class Ticket:
    """One instance's place in a group, shared by its association thread and the loop."""

    def __init__(self, facts: InstanceFacts, loop: asyncio.AbstractEventLoop) -> None:
        self.facts = facts
        self.result: concurrent.futures.Future[IndexOutcome] = concurrent.futures.Future()
        #: Set on the loop once the thread said durable or abandoned.
        self.settled = asyncio.Event()
        self._loop = loop
        self._lock = threading.Lock()
        self._state = _State.WRITING

    # ------------------------------------------------------------------ association thread

    def durable(self) -> None:
        """The file is fsync'd under its final name and its directory fsync'd."""
        with self._lock:
            if self._state is not _State.WRITING:
                return
            self._state = _State.DURABLE
        self._loop.call_soon_threadsafe(self.settled.set)

    def abandon(self) -> bool:
        """Give up (the file is being removed): True unless the row's commit already began, in
        which case the outcome must still be awaited."""
        with self._lock:
            if self._state is _State.COMMITTING:
                return False
            was = self._state
            self._state = _State.ABANDONED
        if was is not _State.ABANDONED:
            self._loop.call_soon_threadsafe(self.settled.set)
        return True

    def outcome(self, timeout_s: float) -> IndexOutcome:
        """Wait for the group's commit; on time-out the instance is abandoned unless its
        commit already began (then that commit is awaited as long again)."""
        try:
            return self.result.result(timeout_s)
        except TimeoutError:
            if self.abandon():
                raise
            return self.result.result(timeout_s)

    # ------------------------------------------------------------------ event loop

    def commit_begins(self) -> bool:
        with self._lock:
            if self._state is not _State.DURABLE:
                return False
            self._state = _State.COMMITTING
            return True

    def back_to_durable(self) -> None:
        with self._lock:
            if self._state is _State.COMMITTING:
                self._state = _State.DURABLE

    @property
    def abandoned(self) -> bool:
        return self._state is _State.ABANDONED

    @property
    def committing(self) -> bool:
        return self._state is _State.COMMITTING

    def resolve(self, outcome: IndexOutcome | BaseException) -> None:
        if self.result.done():
            return
        if isinstance(outcome, BaseException):
            self.result.set_exception(outcome)
        else:
            self.result.set_result(outcome)


class _Rollback(Exception):
    """An instance of the group was abandoned before its commit."""


class GroupIndexer:
    """The Indexer of association threads; `run()` writes the groups on the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: asyncpg.Pool,
        duplicates: repository.Duplicates,
        timeout_s: float,
    ) -> None:
        self._loop = loop
        self._pool = pool
        self._duplicates = duplicates
        self.timeout_s = timeout_s
        #: How many associations are storing (the listener's count; set by the composition
        #: root once the listener exists).
        self.associations: Callable[[], int] = lambda: 1
        self._lock = threading.Lock()
        self._queue: list[Ticket] = []
        self._woken = False
        self._wake = asyncio.Event()

    def begin(self, facts: InstanceFacts) -> Ticket:
        """Hand an instance over (association thread); its row is written meanwhile."""
        ticket = Ticket(facts, self._loop)
        with self._lock:
            self._queue.append(ticket)
            wake, self._woken = not self._woken, True
        if wake:
            self._loop.call_soon_threadsafe(self._wake.set)
        return ticket

    async def run(self) -> None:
        """Write groups until cancelled: each group is all that was handed over meanwhile."""
        self._wake.set()  # a restart picks up what waits
        while True:
            await self._wake.wait()
            self._wake.clear()
            while group := self._take():
                await self.write_group(group)

    def _take(self) -> list[Ticket]:
        with self._lock:
            group, self._queue = self._queue, []
            if not group:
                self._woken = False
            return group

    async def write_group(self, group: Sequence[Ticket]) -> None:
        """Commit the group's rows once all its files are durable; resolve every ticket."""
        try:
            async with asyncio.timeout(self.timeout_s):
                outcomes = await self._write(group)
        except _Rollback:
            for ticket in group:
                if ticket.abandoned:
                    ticket.resolve(Abandoned("given up before its commit"))
            if kept := [t for t in group if not t.abandoned]:
                await self.write_group(kept)
            return
        except Exception as exc:
            if len(group) > 1 and not any(t.committing for t in group):
                # Refused before any commit began (the transaction is rolled back): again one
                # at a time, so that only the culprit fails.
                log.warning(
                    "index group refused, writing one at a time",
                    extra=kv(instances=len(group), error=repr(exc)[:200]),
                )
                for ticket in group:
                    await self.write_group([ticket])
                return
            for ticket in group:  # a commit that failed midway is never written twice
                ticket.resolve(exc)
            return
        for ticket, outcome in zip(group, outcomes, strict=True):
            ticket.resolve(outcome)

    async def _write(self, group: Sequence[Ticket]) -> list[IndexOutcome]:
        rows = repository.index_args([t.facts for t in group])  # while the files are fsync'd
        if len(group) == 1 and self.associations() > 1:
            # Several associations store at once, so CPU bounds them, not one C-STORE's round
            # trips: a lone instance's statement waits for its file and commits by itself, one
            # round trip instead of BEGIN, statement and COMMIT.
            await group[0].settled.wait()
        if all(t.settled.is_set() for t in group):
            # Every file is already durable (or given up): the statement commits by itself.
            # The connection comes first: failing to get one (PostgreSQL down) sends nothing,
            # so the outcome is known and the instances may still be given up.
            async with self._pool.acquire() as conn:
                if not self._begin_commit(group):
                    raise _Rollback
                metrics.INDEX_GROUPS.labels("statement").inc()
                try:
                    return await repository.index_rows(conn, rows, self._duplicates)
                except asyncpg.PostgresError:
                    # The server refused the statement: its own transaction rolled back,
                    # nothing committed, so the group may be written again one at a time.
                    for ticket in group:
                        ticket.back_to_durable()
                    raise
        metrics.INDEX_GROUPS.labels("transaction").inc()
        async with self._pool.acquire() as conn, conn.transaction():
            outcomes = await repository.index_rows(conn, rows, self._duplicates)
            for ticket in group:
                await ticket.settled.wait()
            if not self._begin_commit(group):
                raise _Rollback
        return outcomes

    def _begin_commit(self, group: Sequence[Ticket]) -> bool:
        """Mark every ticket committing, or none (one was abandoned, or is not yet durable)."""
        marked: list[Ticket] = []
        for ticket in group:
            if not ticket.commit_begins():
                for done in marked:
                    done.back_to_durable()
                return False
            marked.append(ticket)
        return True
