"""Schemathesis against the gateway's OpenAPI schema: no 5xx, responses match the schema.

The default depth fits the test budget: the examples and fuzzing phases, 20 cases per operation
(~600 requests, positive and negative). `CB_FUZZ_PHASES=examples,coverage,fuzzing` adds the
coverage phase (boundary and negative values of every constraint, ~1,600 more requests; it
passed with 8 and 25 fuzzing cases per operation too) and `CB_FUZZ_EXAMPLES` raises the depth.

The gateway runs for real (NATS + PostgreSQL); the services it calls over RPC are played by peers
that answer every request type of their contracts, so a 5xx can only come from the gateway."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import (
    CaptureCommand,
    CaptureCommandReply,
    CaptureStatusReply,
    CaptureStatusRequest,
    CatalogAddMedia,
    CatalogAddMediaReply,
    CatalogDeleteMedia,
    CatalogDeleteMediaReply,
    CatalogHoldStudy,
    CatalogHoldStudyReply,
    CatalogReconcile,
    CatalogReconcileReply,
    CommitmentStatusReply,
    CommitmentStatusRequest,
    CommittedStudiesReply,
    CommittedStudiesRequest,
    ConformanceReply,
    ConverterConformance,
    DestinationDelete,
    DestinationListReply,
    DestinationListRequest,
    DestinationReply,
    DestinationUpsert,
    EchoReply,
    EchoRequest,
    ExportStudy,
    ExportStudyReply,
    Reply,
    RetryDelivery,
    RetryDeliveryReply,
    ScpConformance,
    SenderConformance,
    SetRoomStudy,
    SetRoomStudyReply,
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

pytestmark = pytest.mark.integration
REPORTS = Path(__file__).resolve().parents[3] / "artifacts" / "schemathesis"


async def serve_contract_peers(bus: Bus) -> None:
    async def capture(cmd: CaptureCommand) -> Reply:
        return CaptureCommandReply(media_id=str(uuid.uuid4()))

    async def status(req: CaptureStatusRequest) -> Reply:
        return CaptureStatusReply(room=req.room)

    async def set_study(req: SetRoomStudy) -> Reply:
        return SetRoomStudyReply(study_id=req.study_id)

    async def destination(req: DestinationUpsert) -> Reply:
        dest = req.destination.model_copy(update={"id": req.destination.id or str(uuid.uuid4())})
        return DestinationReply(destination=dest)

    async def deleted(_: Any) -> Reply:
        return DestinationReply(ok=False, error="no such destination")

    handlers: list[tuple[Any, Any]] = [
        (CaptureCommand, capture),
        (CaptureStatusRequest, status),
        (SetRoomStudy, set_study),
        (DestinationUpsert, destination),
        (DestinationDelete, deleted),
        (DestinationListRequest, _const(DestinationListReply())),
        (EchoRequest, _const(EchoReply(reachable=False, reason="connection refused"))),
        (RetryDelivery, _const(RetryDeliveryReply(ok=False, error="no such delivery"))),
        (WorklistQuery, _const(WorklistQueryReply())),
        (WorklistServersList, _const(WorklistServersReply())),
        (WorklistServerUpsert, _const(WorklistServersReply())),
        (WorklistServerDelete, _const(WorklistServersReply(ok=False, error="no such server"))),
        (WorklistEcho, _const(WorklistEchoReply(reachable=False, reason="unknown server"))),
        (WorklistCheckItem, _const(WorklistCheckItemReply(ok=False, error="malformed item"))),
        (CatalogReconcile, _const(CatalogReconcileReply(ok=False, error="no such study"))),
        (CatalogDeleteMedia, _const(CatalogDeleteMediaReply(deleted=False))),
        (CatalogAddMedia, _const(CatalogAddMediaReply(ok=False, error="no such study"))),
        (ScpConformance, _const(ConformanceReply(service="scp"))),
        (SenderConformance, _const(ConformanceReply(service="sender"))),
        (WorklistConformance, _const(ConformanceReply(service="worklist"))),
        (ConverterConformance, _const(ConformanceReply(service="converter"))),
        (ExportStudy, _const(ExportStudyReply(ok=False, error="no such study"))),
        (CatalogHoldStudy, _const(CatalogHoldStudyReply(ok=False, error="no such study"))),
        (CommitmentStatusRequest, _const(CommitmentStatusReply())),
        (CommittedStudiesRequest, _const(CommittedStudiesReply())),
    ]
    for request_type, handler in handlers:
        await bus.serve(request_type, handler)
    await bus.nc.flush()


def _const(reply: Reply) -> Any:
    async def handler(_: Any) -> Reply:
        return reply

    return handler


async def test_schemathesis_finds_no_server_errors(gateway: Any, admin: Any, peer_bus: Bus) -> None:
    await serve_contract_peers(peer_bus)
    token = await admin.post("/api/v1/tokens", json={"name": "fuzz", "role": "administrator"})
    assert token.status_code == 201
    REPORTS.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{gateway.url}/api/v1/openapi.json",
        "-H",
        f"Authorization: Bearer {token.json()['token']}",
        "--checks",
        "not_a_server_error,response_schema_conformance,status_code_conformance,"
        "content_type_conformance",
        "--phases",
        os.environ.get("CB_FUZZ_PHASES", "examples,fuzzing"),
        "--max-examples",
        os.environ.get("CB_FUZZ_EXAMPLES", "20"),
        # One worker: hypothesis' lambda-source cache is not thread-safe (spurious errors).
        "--workers",
        "1",
        "--seed",
        "7",
        "--no-color",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        # Logging out would end the test's own session; it has its own test.
        "--exclude-path",
        "/api/v1/auth/logout",
        # Revoking tokens would revoke the fuzzer's own (it learns ids from GET /tokens).
        "--exclude-path",
        "/api/v1/tokens/{token_id}",
        # An endless event stream cannot be fuzzed request/response; it has its own test.
        "--exclude-path-regex",
        "events$",
        "--report",
        "junit",
        "--report-dir",
        str(REPORTS),
    ]
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    (REPORTS / "gateway-schemathesis.txt").write_text(text)
    assert proc.returncode == 0, text[-6000:]
    assert " passed" in text and "failures" not in text.lower().split("summary")[-1]
