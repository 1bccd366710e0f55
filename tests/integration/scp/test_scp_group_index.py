"""Group commit of the SCP's index rows against a real PostgreSQL (group_index.py).

The rows of instances handed over together are written in one open transaction while their
files are made durable, and commit only once every file is: before that no other session sees
them. An abandoned instance never commits and the rest of its group still does; a group the
database refuses is written again one instance at a time, so only the culprit fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from cinebridge_scp import repository
from cinebridge_scp.group_index import Abandoned, GroupIndexer, Ticket
from cinebridge_scp.ingest import InstanceFacts
from cinebridge_testkit import wait_for
from prometheus_client import REGISTRY
from pydicom.uid import generate_uid

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
WAIT_S = 30.0


def facts(n: int, study: str, **attrs: str) -> InstanceFacts:
    values = {
        "sop_class_uid": CT,
        "sop_instance_uid": generate_uid(),
        "study_instance_uid": study,
        "series_instance_uid": study + ".1",
        "patient_name": "Doe^Jane",
        "modality": "CT",
    }
    values.update(attrs)
    rel_path = f"received/2026/12/07/{n:032x}.dcm"
    return InstanceFacts(values, EXPLICIT_LE, "MODALITY", "127.0.0.1", rel_path, 1000, "ab" * 32)


class Indexer:
    """A GroupIndexer whose writing starts when the test says, so that what was handed over
    before forms one group."""

    def __init__(self, index: GroupIndexer) -> None:
        self.index = index
        self.task: asyncio.Task[None] | None = None

    async def begin_all(
        self, batch: list[InstanceFacts], *, durable_first: bool = False
    ) -> list[Ticket]:
        # Handed over from other threads, as association threads do; then the loop writes.
        tickets = [await asyncio.to_thread(self.index.begin, f) for f in batch]
        if durable_first:  # every file durable before the group's statement is sent
            for ticket in tickets:
                await asyncio.to_thread(ticket.durable)

            async def settled() -> bool:
                return all(t.settled.is_set() for t in tickets)

            await wait_for(settled, WAIT_S, what="the tickets settled")
        self.task = asyncio.create_task(self.index.run())
        return tickets


@pytest.fixture
async def indexer(database_url: str) -> AsyncIterator[Indexer]:
    pool = await repository.open_index_pool(database_url)
    index = Indexer(GroupIndexer(asyncio.get_running_loop(), pool, "replace", WAIT_S))
    try:
        yield index
    finally:
        if index.task is not None:
            index.task.cancel()
            await asyncio.gather(index.task, return_exceptions=True)
        await pool.close()


async def indexed(db_pool: asyncpg.Pool) -> list[str]:
    rows = await db_pool.fetch("SELECT rel_path FROM received_instances ORDER BY rel_path")
    return [r["rel_path"] for r in rows]


async def writing_in_open_transaction(db_pool: asyncpg.Pool) -> None:
    """Wait until the group's statement ran and its transaction waits for the files."""

    async def idle_in_transaction() -> bool:
        count = await db_pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state = 'idle in transaction'"
        )
        return bool(count)

    await wait_for(idle_in_transaction, WAIT_S, what="the group's open transaction")


async def outcome(ticket: Ticket) -> object:
    try:
        return await asyncio.to_thread(ticket.outcome, WAIT_S)
    except Abandoned as exc:
        return exc


async def test_rows_commit_together_once_every_file_is_durable(
    indexer: Indexer, db_pool: asyncpg.Pool
) -> None:
    study = generate_uid()
    batch = [facts(n, study) for n in range(3)]
    transactions = groups("transaction")
    tickets = await indexer.begin_all(batch)
    await writing_in_open_transaction(db_pool)
    tickets[0].durable()
    tickets[1].durable()
    # The third file is not durable yet: no row is visible and nobody has an answer.
    assert await indexed(db_pool) == []
    assert not any(t.result.done() for t in tickets)
    tickets[2].durable()
    outcomes = await asyncio.gather(*(outcome(t) for t in tickets))
    assert all(not isinstance(o, Exception) for o in outcomes)
    assert groups("transaction") == transactions + 1
    assert await indexed(db_pool) == sorted(f.rel_path for f in batch)
    # One transaction wrote all three rows, and their outbox events with them.
    assert await db_pool.fetchval("SELECT count(DISTINCT xmin::text) FROM received_instances") == 1
    events = "SELECT count(*) FROM outbox WHERE subject = 'cb.evt.instance.received'"
    assert await db_pool.fetchval(events) == 3


async def test_an_abandoned_instance_never_commits_and_its_group_still_does(
    indexer: Indexer, db_pool: asyncpg.Pool
) -> None:
    study = generate_uid()
    batch = [facts(n, study) for n in range(3)]
    tickets = await indexer.begin_all(batch)
    await writing_in_open_transaction(db_pool)
    assert tickets[1].abandon()  # its fsync failed: its file is being removed
    tickets[0].durable()
    tickets[2].durable()
    outcomes = await asyncio.gather(*(outcome(t) for t in tickets))
    assert isinstance(outcomes[1], Abandoned)
    assert not isinstance(outcomes[0], Exception) and not isinstance(outcomes[2], Exception)
    assert await indexed(db_pool) == sorted([batch[0].rel_path, batch[2].rel_path])


async def test_a_refused_group_fails_only_its_culprit(
    indexer: Indexer, db_pool: asyncpg.Pool
) -> None:
    study = generate_uid()
    # PostgreSQL's jsonb refuses a NUL character: that statement fails as a whole.
    batch = [facts(0, study), facts(1, study, patient_name="Doe\x00Jane"), facts(2, study)]
    tickets = await indexer.begin_all(batch)
    for ticket in tickets:
        ticket.durable()
    outcomes = await asyncio.gather(*(asyncio.to_thread(_outcome_or_error, t) for t in tickets))
    assert isinstance(outcomes[1], asyncpg.PostgresError)
    assert not isinstance(outcomes[0], Exception) and not isinstance(outcomes[2], Exception)
    assert await indexed(db_pool) == sorted([batch[0].rel_path, batch[2].rel_path])


async def test_a_refused_group_of_durable_files_fails_only_its_culprit(
    indexer: Indexer, db_pool: asyncpg.Pool
) -> None:
    """The same when every file was durable before the group's statement: that statement
    commits by itself, and its refusal (nothing committed) is written again one at a time."""
    study = generate_uid()
    batch = [facts(0, study), facts(1, study, patient_name="Doe\x00Jane"), facts(2, study)]
    tickets = await indexer.begin_all(batch, durable_first=True)
    outcomes = await asyncio.gather(*(asyncio.to_thread(_outcome_or_error, t) for t in tickets))
    assert isinstance(outcomes[1], asyncpg.PostgresError)
    assert not isinstance(outcomes[0], Exception) and not isinstance(outcomes[2], Exception)
    assert await indexed(db_pool) == sorted([batch[0].rel_path, batch[2].rel_path])


def groups(how: str) -> float:
    """Groups written so far in this process, by how they committed (the metric)."""
    value = REGISTRY.get_sample_value("cinebridge_scp_index_groups_total", {"how": how})
    return value or 0.0


async def test_a_lone_instance_commits_once_its_file_is_durable(
    indexer: Indexer, db_pool: asyncpg.Pool
) -> None:
    """One sender hands over one instance at a time: its statement still runs while its file is
    made durable, in a transaction that commits only once it is."""
    transactions = groups("transaction")
    (ticket,) = await indexer.begin_all([facts(0, generate_uid())])
    await writing_in_open_transaction(db_pool)
    assert await indexed(db_pool) == []
    assert not ticket.result.done()
    ticket.durable()
    assert not isinstance(await outcome(ticket), Exception)
    assert await indexed(db_pool) == [ticket.facts.rel_path]
    assert groups("transaction") == transactions + 1


async def test_while_several_associations_store_a_lone_instance_commits_by_itself(
    indexer: Indexer, db_pool: asyncpg.Pool
) -> None:
    """With several associations storing, CPU bounds them: a lone instance's statement waits
    for its file and commits by itself (BEGIN and COMMIT would cost the event loop two more
    round trips)."""
    indexer.index.associations = lambda: 4
    transactions, statements = groups("transaction"), groups("statement")
    (ticket,) = await indexer.begin_all([facts(0, generate_uid())])

    async def taken() -> bool:  # the loop holds the group and waits for the file
        return not indexer.index._queue

    await wait_for(taken, WAIT_S, what="the group taken by the loop")
    assert await indexed(db_pool) == []
    assert not ticket.result.done()
    ticket.durable()
    assert not isinstance(await outcome(ticket), Exception)
    assert await indexed(db_pool) == [ticket.facts.rel_path]
    assert groups("statement") == statements + 1
    assert groups("transaction") == transactions


async def test_a_lone_instance_given_up_writes_nothing(
    indexer: Indexer, db_pool: asyncpg.Pool
) -> None:
    (ticket,) = await indexer.begin_all([facts(0, generate_uid())])
    assert ticket.abandon()
    assert isinstance(await outcome(ticket), Abandoned)
    assert await indexed(db_pool) == []
    assert await db_pool.fetchval("SELECT count(*) FROM outbox") == 0


def _outcome_or_error(ticket: Ticket) -> object:
    try:
        return ticket.outcome(WAIT_S)
    except Exception as exc:
        return exc
