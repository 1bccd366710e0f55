"""The worklist service over real NATS and PostgreSQL, querying DCMTK wlmscpfs.

Query → typed items and the offline cache; server down → clear error and today's cached
entries (marked cached, filtered by the same search); C-ECHO per server; server management
RPCs; an item sent back for reconciliation is checked again from its dataset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import (
    WorklistCheckItem,
    WorklistCheckItemReply,
    WorklistEcho,
    WorklistEchoReply,
    WorklistQuery,
    WorklistQueryReply,
    WorklistServer,
    WorklistServerDelete,
    WorklistServersList,
    WorklistServersReply,
    WorklistServerUpsert,
)
from cinebridge_testkit import wait_for
from cinebridge_testkit.demo_worklist import DEMO_AE
from cinebridge_testkit.worklist_peers import FakeRis, WorklistPeer
from cinebridge_worklist.app import WorklistApp
from cinebridge_worklist.query import SearchFields, ServerKeys, build_identifier

from .conftest import running_worklist, worklist_settings

pytestmark = pytest.mark.integration


def dcmtk_server(port: int) -> WorklistServer:
    return WorklistServer(
        id="dcmtk",
        name="DCMTK wlmscpfs",
        host="127.0.0.1",
        port=port,
        called_ae=DEMO_AE,
        modality="ES",
        wildcards=True,
    )


@pytest.fixture
async def service(
    nats_url: str, database_url: str, tmp_path: Path, wlmscpfs_peer: WorklistPeer
) -> AsyncIterator[WorklistApp]:
    servers = [dcmtk_server(wlmscpfs_peer.port)]
    settings = worklist_settings(nats_url, database_url, tmp_path, servers, worklist_timeout_s=20)
    async with running_worklist(settings) as app:
        yield app


async def query(bus: Bus, **fields: str) -> WorklistQueryReply:
    return await bus.request(WorklistQuery(**fields), WorklistQueryReply, timeout_s=30)


async def test_query_serves_typed_items_and_the_cache_answers_when_the_server_is_down(
    service: WorklistApp, client: Bus, db_pool: asyncpg.Pool
) -> None:
    live = await query(client)
    assert live.ok and live.outcome == "complete" and not live.cached, live.error
    assert live.server_id == "dcmtk"
    assert len(live.items) == 200  # C key Modality = ES: every fifth of the 1,000 entries
    assert {item.modality for item in live.items} == {"ES"}
    assert all(item.dataset["00400100"]["Value"] for item in live.items)

    async def cached() -> bool:  # written beside the reply
        return await db_pool.fetchval("SELECT count(*) FROM worklist_cache") == 200

    await wait_for(cached, timeout_s=30, what="200 cached entries")

    # The RIS goes away (same server id, a port where nothing listens).
    down = dcmtk_server(free_port())
    upserted = await client.request(
        WorklistServerUpsert(server=down, by="test"), WorklistServersReply, timeout_s=10
    )
    assert upserted.ok and [s.port for s in upserted.servers] == [down.port]

    offline = await query(client, accession_number="ACC00004")
    # A list to start a procedure from: ok, marked cached, the first warning says why.
    assert offline.ok and offline.outcome == "unreachable" and offline.cached
    assert offline.incomplete and offline.cached_at is not None
    assert "dcmtk is unreachable" in offline.warnings[0] and "cached" in offline.warnings[0]
    # *ACC00004* among the cached ES entries: ACC000040 and ACC000045.
    assert sorted(item.accession_number or "" for item in offline.items) == [
        "ACC000040",
        "ACC000045",
    ]
    echo = await client.request(WorklistEcho(server_id="dcmtk"), WorklistEchoReply, 20)
    assert echo.ok and not echo.reachable and echo.reason


async def test_echo_list_and_delete_servers(
    service: WorklistApp, client: Bus, wlmscpfs_peer: WorklistPeer
) -> None:
    echo = await client.request(WorklistEcho(server_id="dcmtk"), WorklistEchoReply, 20)
    assert echo.ok and echo.reachable and echo.rtt_ms is not None
    assert service.ctx is not None
    detail = service.ctx.detail

    async def echoed_at_start() -> str | None:
        return detail.get("echo_dcmtk")

    assert (await wait_for(echoed_at_start, 10, what="the start-up echo")).startswith("ok ")
    unknown = await client.request(WorklistEcho(server_id="nope"), WorklistEchoReply, 10)
    assert not unknown.ok and "nope" in (unknown.error or "")

    listed = await client.request(WorklistServersList(), WorklistServersReply, 10)
    assert [s.id for s in listed.servers] == ["dcmtk"]
    assert listed.servers[0].port == wlmscpfs_peer.port

    deleted = await client.request(
        WorklistServerDelete(server_id="dcmtk"), WorklistServersReply, 10
    )
    assert deleted.ok and deleted.servers == []
    again = await client.request(WorklistServerDelete(server_id="dcmtk"), WorklistServersReply, 10)
    assert not again.ok
    none = await query(client)
    assert not none.ok and "no enabled" in (none.error or "")


async def test_an_item_sent_back_is_checked_again_from_its_dataset(
    service: WorklistApp, client: Bus
) -> None:
    """Reconciliation takes an item back from a client: the worklist service decodes it again
    from its dataset (as at the door), so values edited on the way do not reach the catalog."""
    (item,) = (await query(client, accession_number="ACC000040")).items
    tampered = item.model_copy(update={"patient_name": "MALLORY", "accession_number": "X"})
    reply = await client.request(WorklistCheckItem(item=tampered), WorklistCheckItemReply, 10)
    assert reply.ok, reply.error
    assert reply.item is not None
    assert (reply.item.patient_name, reply.item.accession_number) == (
        item.patient_name,
        "ACC000040",
    )
    assert reply.item.study_instance_uid == item.study_instance_uid
    assert reply.item.requested_procedure_id == "RP00040"


async def test_a_slow_ris_does_not_hold_up_another_rooms_query(
    service: WorklistApp, client: Bus
) -> None:
    slow_entries = [build_identifier(SearchFields(), ServerKeys())]
    slow_entries[0].PatientID, slow_entries[0].PatientName = "SLOW1", "SLOW^RIS"
    with FakeRis(entries=lambda: iter(slow_entries), sleep_after=0, sleep_s=6.0) as ris:
        slow = WorklistServer(id="slow", host="127.0.0.1", port=ris.port, called_ae="FAKERIS")
        await client.request(WorklistServerUpsert(server=slow), WorklistServersReply, 10)
        started = time.monotonic()
        slow_task = asyncio.create_task(query(client, server_id="slow"))
        await asyncio.wait_for(_until_requested(ris), 10)  # the slow query is in progress first
        fast = await query(client, server_id="dcmtk", accession_number="ACC000040")
        # Answered while the slow RIS still stalls (6 s, under the 10 s query limit): not queued.
        fast_first = not slow_task.done()
        slow_reply = await slow_task
        slow_elapsed = time.monotonic() - started
    assert fast.ok and [i.accession_number for i in fast.items] == ["ACC000040"]
    assert slow_reply.ok and [i.patient_id for i in slow_reply.items] == ["SLOW1"]
    assert slow_elapsed >= 6.0
    assert fast_first, "the fast query waited for the slow one"


async def _until_requested(ris: FakeRis) -> None:
    while not ris.requests:
        await asyncio.sleep(0.05)


async def test_an_id_search_finds_the_patient_on_a_server_without_id_wildcards(
    service: WorklistApp, client: Bus
) -> None:
    # Wildcards are on, so the key is *PID00040*; DCMTK takes '*' in Patient ID literally and
    # finds nothing, then the service asks again with the exact value.
    reply = await query(client, patient_id="PID00040")
    assert reply.ok and reply.outcome == "complete"
    assert [item.patient_id for item in reply.items] == ["PID00040"]
    assert reply.warnings == ["no partial matches; exact matches shown"]
    none = await query(client, patient_id="PID99999")
    assert none.ok and none.items == [] and none.warnings == []
