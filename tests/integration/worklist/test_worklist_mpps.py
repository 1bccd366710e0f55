"""The MPPS SCU of the worklist service over real NATS and PostgreSQL, reporting to an in-process
pynetdicom MPPS SCP: the bus events the capture, gateway and converter publish drive each
study's performed procedure step (PS3.4 Annex F; IHE RAD-6/RAD-7).

Scheduled study: first capture → N-CREATE; Save → N-SET COMPLETED once every media item is
converted, listing every series and instance. Unscheduled study. Discontinued with a CID 9300
reason. SCP down → retried after the service restarts, nothing lost, nothing sent twice. SCP
answering a failure status → the step shows it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import (
    CodedReason,
    ConversionFailed,
    InstanceCreated,
    MediaCaptured,
    MppsStateChanged,
    StudyChanged,
    StudyDiscontinued,
    StudySaved,
    WorklistServer,
)
from cinebridge_gateway.settings_repository import save_station_settings
from cinebridge_testkit import wait_for
from cinebridge_testkit.worklist_peers import FakeMpps
from cinebridge_worklist.app import WorklistApp
from cinebridge_worklist.settings import WorklistSettings
from prometheus_client import REGISTRY

pytestmark = pytest.mark.integration


def sample(name: str, **labels: str) -> float:
    """A metric of the service running in this process (its /metrics shows the same)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
VL_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1"


def ris(mpps_port: int) -> WorklistServer:
    # The C-FIND side is not used here: a port where nothing listens.
    return WorklistServer(
        id="ris",
        host="127.0.0.1",
        port=free_port(),
        called_ae="RIS",
        mpps_enabled=True,
        mpps_ae="FAKEMPPS",
        mpps_port=mpps_port,
    )


@asynccontextmanager
async def running(
    nats_url: str, database_url: str, tmp_path: Path, mpps_port: int, instance: str = "a"
) -> AsyncIterator[WorklistApp]:
    settings = WorklistSettings(
        nats_url=nats_url,
        database_url=database_url,
        media_root=tmp_path / "media",
        instance_id=f"worklist-{instance}",
        worklist_seed_servers=[ris(mpps_port)],
        worklist_mpps_timeout_s=5,
        worklist_mpps_backoff_s=0.5,
        worklist_mpps_backoff_cap_s=2,
        worklist_mpps_sweep_interval_s=1,
        worklist_mpps_lease_s=5,
    )
    app = WorklistApp(settings)
    task = asyncio.create_task(app.run())
    try:
        async with asyncio.timeout(30):
            await app.ready.wait()
        yield app
    finally:
        app.stop()
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_url, f"mpps-test-{uuid.uuid4().hex[:6]}")
    yield bus
    await bus.close()


@pytest.fixture
def scp() -> Any:
    with FakeMpps() as peer:
        yield peer


WORKLIST_ITEM = {
    "00080050": {"vr": "SH", "Value": ["ACC-1"]},
    "00321060": {"vr": "LO", "Value": ["Gastroscopy"]},
    "00401001": {"vr": "SH", "Value": ["RP-1"]},
    "00400100": {
        "vr": "SQ",
        "Value": [
            {
                "00080060": {"vr": "CS", "Value": ["ES"]},
                "00400009": {"vr": "SH", "Value": ["SPS-1"]},
                "00400007": {"vr": "LO", "Value": ["Upper GI endoscopy"]},
            }
        ],
    },
}


async def new_study(db: asyncpg.Pool, *, scheduled: bool) -> tuple[uuid.UUID, str]:
    study_id, uid = uuid.uuid4(), f"2.25.{uuid.uuid4().int}"
    await db.execute(
        """INSERT INTO studies (id, study_instance_uid, origin, room, patient_name, patient_id,
                                accession_number, study_id, worklist_item, modality)
           VALUES ($1, $2, $3, 'room1', 'Doe^Jane', 'P1', $4, $5, $6, $7)""",
        study_id,
        uid,
        "worklist" if scheduled else "unscheduled",
        "ACC-1" if scheduled else "",
        "RP-1" if scheduled else "",
        WORKLIST_ITEM if scheduled else None,
        "ES" if scheduled else "",
    )
    return study_id, uid


def captured(study_id: uuid.UUID, media_id: uuid.UUID, kind: str = "snapshot") -> MediaCaptured:
    return MediaCaptured(
        media_id=str(media_id),
        study_id=str(study_id),
        room="room1",
        source="scope",
        kind=kind,  # type: ignore[arg-type]
        rel_path=f"media/{media_id}.jpg",
        size=1000,
        sha256="0" * 64,
        mime="image/jpeg",
    )


def created(
    study_id: uuid.UUID,
    media_id: uuid.UUID,
    series: str,
    part: int = 1,
    parts: int = 1,
    sop_class: str = VL_ENDOSCOPIC,
) -> InstanceCreated:
    uid = f"2.25.{uuid.uuid4().int}"
    return InstanceCreated(
        instance_id=str(uuid.uuid4()),
        media_id=str(media_id),
        study_id=str(study_id),
        sop_instance_uid=uid,
        sop_class_uid=sop_class,
        transfer_syntax_uid="1.2.840.10008.1.2.4.50",
        rel_path=f"dicom/{uid}.dcm",
        size=2000,
        sha256="1" * 64,
        series_instance_uid=series,
        series_description="scope",
        part=part,
        parts=parts,
    )


def step_in(db: asyncpg.Pool, study_id: uuid.UUID, *states: str) -> Callable[[], Any]:
    async def check() -> Any:
        row = await db.fetchrow("SELECT * FROM mpps_steps WHERE study_id = $1", study_id)
        return row if row is not None and row["state"] in states else None

    return check


async def test_scheduled_study_created_then_completed_with_every_instance(
    nats_url: str,
    database_url: str,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    client: Bus,
    scp: FakeMpps,
) -> None:
    events: list[MppsStateChanged] = []

    async def on_state(msg: Any) -> None:
        events.append(MppsStateChanged.from_bytes(msg.data))

    await client.subscribe_events(MppsStateChanged.subject, on_state)
    async with running(nats_url, database_url, tmp_path, scp.port):
        study_id, uid = await new_study(db_pool, scheduled=True)
        snap, video = uuid.uuid4(), uuid.uuid4()
        await client.publish(captured(study_id, snap))
        await client.publish(captured(study_id, video, "recording"))
        await wait_for(step_in(db_pool, study_id, "in-progress"), 30, what="N-CREATE")
        assert [r.operation for r in scp.requests] == ["N-CREATE"]
        ssa = scp.requests[0].dataset.ScheduledStepAttributesSequence[0]
        assert (ssa.StudyInstanceUID, ssa.AccessionNumber, ssa.ScheduledProcedureStepID) == (
            uid,
            "ACC-1",
            "SPS-1",
        )

        await client.publish(StudySaved(study_id=str(study_id), media_ids=[str(snap), str(video)]))
        # The recording became two instances; until both are here the step stays in progress.
        still = created(study_id, snap, "2.25.100")
        first = created(study_id, video, "2.25.200", 1, 2, VIDEO_ENDOSCOPIC)
        await client.publish(still)
        await client.publish(first)
        await wait_for(
            lambda: db_pool.fetchval("SELECT count(*) = 2 FROM mpps_instances"),
            20,
            what="two instances recorded",
        )
        row = await db_pool.fetchrow("SELECT * FROM mpps_steps WHERE study_id = $1", study_id)
        assert row["state"] == "in-progress" and row["final_status"] is None
        second = created(study_id, video, "2.25.200", 2, 2, VIDEO_ENDOSCOPIC)
        await client.publish(second)
        done = await wait_for(step_in(db_pool, study_id, "completed"), 30, what="N-SET COMPLETED")
        assert done["last_error"] is None

    assert [r.operation for r in scp.requests] == ["N-CREATE", "N-SET"]
    final = scp.requests[1].dataset
    assert final.PerformedProcedureStepStatus == "COMPLETED"
    listed = {
        s.SeriesInstanceUID: sorted(r.ReferencedSOPInstanceUID for r in s.ReferencedImageSequence)
        for s in final.PerformedSeriesSequence
    }
    assert listed == {
        "2.25.100": [still.sop_instance_uid],
        "2.25.200": sorted([first.sop_instance_uid, second.sop_instance_uid]),
    }
    assert scp.requests[1].sop_instance_uid == scp.requests[0].sop_instance_uid
    seen = await wait_for(lambda: _states(events), 10, what="state events up to completed")
    assert seen[0] == "pending-create" and seen[-1] == "completed"


async def _states(events: list[MppsStateChanged]) -> list[str] | None:
    states = [e.state for e in events]
    return states if states and states[-1] == "completed" else None


async def test_unscheduled_study_at_start_and_a_failed_conversion_still_completes(
    nats_url: str,
    database_url: str,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    client: Bus,
    scp: FakeMpps,
) -> None:
    await save_station_settings(db_pool, {"mpps_trigger": "study-start"}, "test")
    async with running(nats_url, database_url, tmp_path, scp.port):
        study_id, uid = await new_study(db_pool, scheduled=False)
        await client.publish(StudyChanged(study_id=str(study_id), change="created"))
        await wait_for(step_in(db_pool, study_id, "in-progress"), 30, what="N-CREATE at start")
        ssa = scp.requests[0].dataset.ScheduledStepAttributesSequence[0]
        assert ssa.StudyInstanceUID == uid and ssa.RequestedProcedureID == ""
        good, bad = uuid.uuid4(), uuid.uuid4()
        await client.publish(captured(study_id, good))
        await client.publish(StudySaved(study_id=str(study_id), media_ids=[str(good), str(bad)]))
        await client.publish(created(study_id, good, "2.25.300"))
        await client.publish(
            ConversionFailed(media_id=str(bad), study_id=str(study_id), reason="bad file")
        )
        await wait_for(step_in(db_pool, study_id, "completed"), 30, what="N-SET COMPLETED")
    assert [r.operation for r in scp.requests] == ["N-CREATE", "N-SET"]
    (series,) = scp.requests[1].dataset.PerformedSeriesSequence
    assert len(series.ReferencedImageSequence) == 1


async def test_discontinued_with_a_cid_9300_reason(
    nats_url: str,
    database_url: str,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    client: Bus,
    scp: FakeMpps,
) -> None:
    async with running(nats_url, database_url, tmp_path, scp.port):
        study_id, _ = await new_study(db_pool, scheduled=True)
        await client.publish(captured(study_id, uuid.uuid4()))
        await wait_for(step_in(db_pool, study_id, "in-progress"), 30, what="N-CREATE")
        reason = CodedReason(value="110514", meaning="Incorrect worklist entry selected")
        await client.publish(StudyDiscontinued(study_id=str(study_id), reason=reason))
        await wait_for(step_in(db_pool, study_id, "discontinued"), 30, what="DISCONTINUED")
        # A Save afterwards changes nothing: the step is final (PS3.4 F.7.2.2).
        await client.publish(StudySaved(study_id=str(study_id), media_ids=[]))
        await client.publish(captured(study_id, uuid.uuid4()))
        marker = uuid.uuid4()
        await new_study(db_pool, scheduled=False)
        await client.publish(captured(marker, marker))  # unknown study: ignored
    final = scp.requests[-1].dataset
    assert final.PerformedProcedureStepStatus == "DISCONTINUED"
    code = final.PerformedProcedureStepDiscontinuationReasonCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("110514", "DCM")
    assert [r.operation for r in scp.requests] == ["N-CREATE", "N-SET"]


async def test_scp_down_is_retried_after_a_restart_nothing_lost_nothing_twice(
    nats_url: str,
    database_url: str,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    client: Bus,
) -> None:
    port = free_port()
    async with running(nats_url, database_url, tmp_path, port):
        study_id, _ = await new_study(db_pool, scheduled=True)
        await client.publish(captured(study_id, uuid.uuid4()))
        row = await wait_for(
            lambda: db_pool.fetchrow(
                "SELECT * FROM mpps_steps WHERE study_id = $1 AND attempts >= 2", study_id
            ),
            30,
            what="two failed attempts",
        )
        assert row["state"] == "failed-retrying" and not row["created"]
        assert "not answered" in row["last_error"]
    # The service is stopped; the RIS comes back on the same port, then the service.
    with FakeMpps(port=port) as scp:
        async with running(nats_url, database_url, tmp_path, port, instance="b"):
            await wait_for(step_in(db_pool, study_id, "in-progress"), 30, what="N-CREATE")
            media = uuid.uuid4()
            await client.publish(StudySaved(study_id=str(study_id), media_ids=[str(media)]))
            await client.publish(created(study_id, media, "2.25.400"))
            await wait_for(step_in(db_pool, study_id, "completed"), 30, what="COMPLETED")
        assert [(r.operation, r.status) for r in scp.requests] == [
            ("N-CREATE", 0x0000),
            ("N-SET", 0x0000),
        ]


async def test_failure_status_is_shown_and_transient_one_retried(
    nats_url: str,
    database_url: str,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    client: Bus,
    scp: FakeMpps,
) -> None:
    scp.statuses = [0x0110, 0x0120]  # processing failure (retried), then missing attribute
    requests = "cinebridge_worklist_mpps_requests_total"
    retried = sample(requests, server="ris", operation="create", outcome="retry")
    failed = sample(requests, server="ris", operation="create", outcome="failed")
    async with running(nats_url, database_url, tmp_path, scp.port):
        study_id, _ = await new_study(db_pool, scheduled=False)
        await client.publish(captured(study_id, uuid.uuid4()))
        row = await wait_for(step_in(db_pool, study_id, "failed"), 30, what="permanent failure")

        async def gauged() -> bool:
            return sample("cinebridge_worklist_mpps_steps", state="failed") == 1

        await wait_for(gauged, 20, what="the steps gauge refreshed by the sweeper")
    assert sample(requests, server="ris", operation="create", outcome="retry") == retried + 1
    assert sample(requests, server="ris", operation="create", outcome="failed") == failed + 1
    assert row["last_status"] == 0x0120
    assert "0x0120 missing attribute" in row["last_error"]
    assert [r.status for r in scp.requests] == [0x0110, 0x0120]
    assert row["attempts"] == 2
