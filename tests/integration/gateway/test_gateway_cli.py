"""The `cinebridge` admin command line against a running gateway with an API token; the other
services' RPCs are played on the bus. Exit codes as the CLI's README says."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from typing import Any

import pytest
from cinebridge_cli.__main__ import main
from cinebridge_common.bus import Bus
from cinebridge_common.messages import (
    Destination,
    DestinationListReply,
    DestinationListRequest,
    EchoReply,
    EchoRequest,
    Reply,
    RetryDelivery,
    RetryDeliveryReply,
    WorklistQuery,
    WorklistQueryReply,
)


async def cli(gateway: Any, token: str, *argv: str) -> tuple[int, list[str]]:
    """Run one command in a thread (it blocks on HTTP); its exit code and output lines."""
    lines: list[str] = []
    code = await asyncio.to_thread(
        main, ["--url", gateway.url, "--token", token, *argv], out=lines.append
    )
    return code, "\n".join(lines).splitlines()


async def new_token(admin: Any, role: str = "administrator") -> str:
    reply = await admin.post("/api/v1/tokens", json={"name": f"cli-{role}", "role": role})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["token"])


async def until_gateway_reports_itself(admin: Any) -> None:
    async with asyncio.timeout(30):
        while not (await admin.get("/api/health")).json()["instances"]:
            await asyncio.sleep(0.2)


async def test_status_and_refused_tokens(gateway: Any, admin: Any) -> None:
    token = await new_token(admin)
    await until_gateway_reports_itself(admin)
    code, out = await cli(gateway, token, "status")
    assert code == 0, out
    assert out[0] == "station: ok" and any(line.split()[:1] == ["gateway"] for line in out[2:])
    assert any(line.startswith("dead letters: 0") for line in out)
    code, out = await cli(gateway, token, "--json", "status")
    assert code == 0 and json.loads("\n".join(out))["problems"] == []
    assert (await cli(gateway, "not-a-token", "status"))[0] == 4
    assert await asyncio.to_thread(main, ["--url", gateway.url, "status"], out=print) == 4
    # Nothing listens on port 9 (discard) of this box: the gateway is unreachable.
    unreachable = ["--url", "http://127.0.0.1:9", "--token", token, "--timeout", "5", "status"]
    assert await asyncio.to_thread(main, unreachable, out=print) == 3


async def test_echo_by_address_and_by_destination_name(
    gateway: Any, admin: Any, peer_bus: Bus
) -> None:
    asked: list[EchoRequest] = []

    async def echo(req: EchoRequest) -> Reply:
        asked.append(req)
        up = req.port == 104 or req.destination_id is not None
        return EchoReply(reachable=up, rtt_ms=2.5, reason=None if up else "connection refused")

    await peer_bus.serve(EchoRequest, echo)
    await peer_bus.nc.flush()
    token = await new_token(admin)
    code, out = await cli(gateway, token, "echo", "PACS@127.0.0.1:104")
    assert (code, out) == (0, ["PACS@127.0.0.1:104: reachable, 2.5 ms"])
    assert (asked[0].ae_title, asked[0].host, asked[0].port) == ("PACS", "127.0.0.1", 104)
    code, out = await cli(gateway, token, "echo", "PACS@127.0.0.1:105")
    assert code == 1 and "NOT reachable: connection refused" in out[0]

    dest = str(uuid.uuid4())

    async def destinations(_: DestinationListRequest) -> Reply:
        archive = Destination(id=dest, name="archive", ae_title="ARCH", host="h", port=4242)
        return DestinationListReply(destinations=[archive])

    await peer_bus.serve(DestinationListRequest, destinations)
    await peer_bus.nc.flush()
    code, out = await cli(gateway, token, "echo", "archive")
    assert code == 0, out
    assert asked[-1].destination_id == dest
    code, _ = await cli(gateway, token, "echo", "nowhere")
    assert code == 5


async def test_failed_deliveries_listed_and_retried(
    gateway: Any, admin: Any, peer_bus: Bus
) -> None:
    retried: list[str] = []

    async def retry(req: RetryDelivery) -> Reply:
        retried.append(req.delivery_id)
        return RetryDeliveryReply(state="queued")

    await peer_bus.serve(RetryDelivery, retry)
    await peer_bus.nc.flush()
    token = await new_token(admin)
    code, out = await cli(gateway, token, "deliveries")
    assert code == 0 and out == ["unsent: 0 (oldest -)", "failed: 0"]

    pool = gateway.ctx.pool
    study = (await admin.post("/api/v1/studies", json={"origin": "form"})).json()
    dest, inst, delivery = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await pool.execute(
        "INSERT INTO destinations (id, name, ae_title, host, port) "
        "VALUES ($1, 'PACS', 'PACS', '127.0.0.1', 104)",
        dest,
    )
    await pool.execute(
        "INSERT INTO outgoing_instances (id, study_id, sop_instance_uid, sop_class_uid, "
        "transfer_syntax_uid, rel_path, size, sha256) VALUES ($1, $2, '1.2.3', '1.2.840.10008."
        "5.1.4.1.1.7', '1.2.840.10008.1.2.4.50', 'dicom/x.dcm', 1, 'x')",
        inst,
        uuid.UUID(study["id"]),
    )
    await pool.execute(
        "INSERT INTO deliveries (id, instance_id, destination_id, study_id, state, attempts, "
        "last_error) VALUES ($1, $2, $3, $4, 'failed-permanent', 3, 'A700 out of resources')",
        delivery,
        inst,
        dest,
        uuid.UUID(study["id"]),
    )
    code, out = await cli(gateway, token, "deliveries", "--failed")
    assert code == 1 and out[0] == "failed: 1"
    assert str(delivery) in out[1] and "failed-permanent" in out[1] and "A700" in out[1]
    code, out = await cli(gateway, token, "--json", "deliveries", "--failed", "--retry")
    assert code == 0, out
    report = json.loads("\n".join(out))
    assert report["retried"] == [{"delivery_id": str(delivery), "state": "queued"}]
    assert retried == [str(delivery)]
    code, out = await cli(gateway, token, "status")
    assert code == 1 and "1 failed deliveries" in out[0]


async def test_worklist_query(gateway: Any, admin: Any, peer_bus: Bus) -> None:
    asked: list[WorklistQuery] = []

    async def query(q: WorklistQuery) -> Reply:
        asked.append(q)
        if q.patient_id == "DOWN":
            return WorklistQueryReply(ok=False, outcome="failed", error="RIS unreachable")
        item = {
            "patient_name": "DOE^JANE",
            "patient_id": "PID-1",
            "accession_number": "ACC-1",
            "scheduled_procedure_step_start_date": "20261207",
        }
        return WorklistQueryReply(items=[item], outcome="complete")  # type: ignore[list-item]

    await peer_bus.serve(WorklistQuery, query)
    await peer_bus.nc.flush()
    token = await new_token(admin, role="operator")
    code, out = await cli(
        gateway, token, "worklist", "query", "--patient-name", "DOE*", "--date-from", "20261207"
    )
    assert code == 0, out
    assert (asked[0].patient_name, asked[0].date_from) == ("DOE*", "20261207")
    assert out[0] == "1 entries" and "PID-1" in out[1] and "DOE^JANE" in out[1]
    code, out = await cli(gateway, token, "worklist", "query", "--patient-id", "DOWN")
    assert code == 1


async def test_users_added_and_listed(
    gateway: Any, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await new_token(admin)
    monkeypatch.setattr("sys.stdin", io.StringIO("nurse-password-1\n"))
    code, out = await cli(gateway, token, "users", "add", "nurse1")
    assert (code, out) == (0, ["created nurse1 (operator)"])
    code, out = await cli(gateway, token, "users", "list")
    assert code == 0 and any(line.split() == ["nurse1", "operator", "active"] for line in out)
    nurse = await gateway.login("nurse1", "nurse-password-1")  # the new user can log in
    await nurse.aclose()
    operator = await new_token(admin, role="operator")
    assert (await cli(gateway, operator, "users", "list"))[0] == 4
