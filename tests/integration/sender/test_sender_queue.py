"""The send queue: the `deliveries` table worked by every sender process, woken by PostgreSQL.

Two sender processes share one destination (each delivery sent once, none left behind, a lease
never taken over while it lives), a killed one's rows come back when its leases end, and
destinations added, disabled, enabled and deleted at run time are followed (and the durable of
the retired per-delivery send job is removed). The wake-up cases run with a lease (the longest
a worker sleeps unwoken) far beyond their wait bounds, so only a NOTIFY can have woken them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from cinebridge_common.bus import Bus, ConsumerSpec
from cinebridge_common.embedded import EmbeddedNats
from cinebridge_common.messages import (
    Destination,
    DestinationDelete,
    DestinationReply,
    DestinationUpsert,
    InstanceCreated,
)
from cinebridge_testkit import wait_for
from cinebridge_testkit.sender_harness import SenderHarness, wait_states
from cinebridge_testkit.storage_peers import ScriptedScp
from nats.js.errors import NotFoundError

pytestmark = pytest.mark.integration

#: C-STOREs may be held far longer than the harness's 5 s DIMSE time-out in these cases.
PATIENT = {"CB_SENDER_DIMSE_TIMEOUT_S": "180", "CB_SENDER_NETWORK_TIMEOUT_S": "180"}
#: No worker looks at its queue unwoken within these tests' bounds.
WOKEN_ONLY = {"CB_SENDER_LEASE_S": "900", "CB_SENDER_SWEEP_INTERVAL_S": "900"}


def one_association(port: int, ae: str = "SCRIPTED") -> list[dict[str, object]]:
    return [
        {"name": "pacs", "ae_title": ae, "host": "127.0.0.1", "port": port, "max_associations": 1}
    ]


def held_until(gate: threading.Event) -> ScriptedScp:
    """An SCP that answers no C-STORE before `gate` opens (bounded, so nothing hangs)."""

    def script(_uid: str, _n: int) -> int:
        gate.wait(240)
        return 0x0000

    return ScriptedScp(script=script)


@dataclass
class Pair:
    """A second sender process on the same NATS, database and media store, and an SCP that
    holds every C-STORE until `gate` opens."""

    other: SenderHarness
    gate: threading.Event
    scp: ScriptedScp


@pytest.fixture
def pair(harness: SenderHarness, database_url: str, tmp_path: Path) -> Iterator[Pair]:
    gate = threading.Event()
    (tmp_path / "b").mkdir()
    other = SenderHarness(harness.nats, database_url, harness.store, tmp_path / "b")
    with held_until(gate) as scp:
        try:
            yield Pair(other, gate, scp)
        finally:
            gate.set()
            other.stop()


async def attempts_by_sender(pool: asyncpg.Pool) -> dict[str, set[object]]:
    rows = await pool.fetch("SELECT delivery_id, sender FROM delivery_attempts")
    out: dict[str, set[object]] = {}
    for row in rows:
        out.setdefault(row["sender"], set()).add(row["delivery_id"])
    return out


async def both_holding_a_batch(
    harness: SenderHarness, pair: Pair, bus: Bus, count: int
) -> list[InstanceCreated]:
    """`count` instances queued to one destination, sender A holding one batch of them (its one
    association waits on the SCP's gate), then sender B holding another: the second association
    can only be B's, and only with rows A does not hold."""
    scp, env = pair.scp, {**PATIENT, "CB_SENDER_BATCH_MAX": "10"}
    harness.start(destinations=one_association(scp.port), CB_INSTANCE_ID="sender-a", **env)
    msgs = harness.make(count)
    await harness.announce(bus, msgs)
    await wait_for(lambda: _true(scp.associations >= 1), 120, what="first association")
    pair.other.start(CB_INSTANCE_ID="sender-b", **env)
    await wait_for(lambda: _true(scp.associations >= 2), 120, what="second association")
    return msgs


async def test_two_senders_share_a_destination_each_delivery_once(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool, pair: Pair
) -> None:
    msgs = await both_holding_a_batch(harness, pair, bus, 40)
    pair.gate.set()
    await wait_states(db_pool, {"sent": 40}, 180, harness)
    scp = pair.scp
    assert set(scp.received) == {m.sop_instance_uid for m in msgs}
    assert all(n == 1 for n in scp.seen.values()), scp.seen  # no row taken under a live lease
    per_sender = await attempts_by_sender(db_pool)
    assert set(per_sender) == {"sender@sender-a", "sender@sender-b"}
    assert not per_sender["sender@sender-a"] & per_sender["sender@sender-b"]
    assert await db_pool.fetchval("SELECT count(*) FROM delivery_attempts") == 40


async def test_a_killed_senders_rows_come_back_when_its_leases_end(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool, pair: Pair
) -> None:
    msgs = await both_holding_a_batch(harness, pair, bus, 20)
    harness.kill()  # mid-batch, its deliveries leased
    leased = {
        r["id"]: r["lease_until"]
        for r in await db_pool.fetch(
            "SELECT id, lease_until FROM deliveries WHERE lease_owner = 'sender@sender-a'"
        )
    }
    pair.gate.set()
    await wait_states(db_pool, {"sent": 20}, 180, pair.other)
    scp = pair.scp
    assert leased, "the killed sender held no lease"
    assert set(scp.received) == {m.sop_instance_uid for m in msgs}
    # At least once: only the instance in flight when it died may have reached the PACS twice.
    assert sum(n - 1 for n in scp.seen.values()) <= 1, scp.seen
    rows = await db_pool.fetch(
        """SELECT delivery_id, sender, started_at FROM delivery_attempts
           WHERE delivery_id = ANY($1::uuid[])""",
        list(leased),
    )
    assert {r["delivery_id"] for r in rows} == set(leased)
    for row in rows:  # taken over by the survivor, and only once the lease had ended
        assert row["sender"] == "sender@sender-b"
        assert row["started_at"] >= leased[row["delivery_id"]]


async def test_destinations_changed_at_run_time_are_followed(
    harness: SenderHarness, bus: Bus, db_pool: asyncpg.Pool, own_nats: EmbeddedNats
) -> None:
    # A durable of the retired per-delivery send job, as an earlier sender left it.
    await bus.ensure_consumer(ConsumerSpec("CB_JOBS", "sender-send", "cb.job.sender.send"))
    with ScriptedScp() as scp:
        harness.start(destinations=[], **WOKEN_ONLY)
        await harness.answering()
        with pytest.raises(NotFoundError):
            await bus.js.consumer_info("CB_JOBS", "sender-send")
        added = await _upsert(
            bus, Destination(name="late", ae_title=scp.ae_title, host="127.0.0.1", port=scp.port)
        )
        # Added while running: its worker starts, and a new delivery is sent when queued.
        first = harness.make(3)
        await harness.announce(bus, first)
        await wait_states(db_pool, {"sent": 3}, 60, harness)

        # Disabled: what is named for it waits; enabled again: sent.
        off = await _upsert(bus, added.model_copy(update={"enabled": False}))
        assert off.enabled is False
        held = [_naming(m, off) for m in harness.make(2)]
        await harness.announce(bus, held)
        await wait_states(db_pool, {"sent": 3, "queued": 2}, 60, harness)
        await _upsert(bus, off.model_copy(update={"enabled": True}))
        await wait_states(db_pool, {"sent": 5}, 60, harness)

        # Deleted: its deliveries go with it and its worker ends.
        gone = await bus.request(
            DestinationDelete(destination_id=added.id or ""), DestinationReply, 10
        )
        assert gone.ok
        await wait_for(
            lambda: _true(harness.log_text().count("send worker: ended") >= 2),
            60,
            what="the deleted destination's worker ending",
        )
    assert set(scp.received) == {m.sop_instance_uid for m in first + held}
    assert await db_pool.fetchval("SELECT count(*) FROM deliveries") == 0


async def _upsert(bus: Bus, destination: Destination) -> Destination:
    reply = await bus.request(DestinationUpsert(destination=destination), DestinationReply, 10)
    assert reply.ok and reply.destination is not None, reply.error
    return reply.destination


def _naming(msg: InstanceCreated, destination: Destination) -> InstanceCreated:
    return msg.model_copy(update={"destination_ids": [destination.id]})


async def _true(value: bool) -> bool:
    return value
