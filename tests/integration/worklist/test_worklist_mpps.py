"""The MPPS SCU of the worklist service over real NATS and PostgreSQL, reporting to an in-process
pynetdicom MPPS SCP: the bus events the capture, gateway and converter publish drive each
study's performed procedure steps (PS3.4 Annex F; IHE RAD-6/RAD-7).

Scheduled study: first capture → N-CREATE; Save → N-SET COMPLETED once every media item is
converted, listing every series and instance. Unscheduled study. Discontinued with a CID 9300
reason. SCP down → retried after the service restarts, nothing lost, nothing sent twice. SCP
answering a failure status → the step shows it. Then, each with the service SIGKILLed in the
middle and every request checked against PS3.4 Table F.7.2-1: the append case (a new step after
the first ended, IHE RAD TF-2 4.6.4.1.2.4), a study reconciled with a worklist item after its
unscheduled N-CREATE (DISCONTINUED 110514 and a step linked to the item, RAD TF-2 4.7.4.1.3),
and MPPS enabled in the middle of a study (a whole step, not half of one).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
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
    WorklistServersReply,
    WorklistServerUpsert,
)
from cinebridge_gateway.settings_repository import save_station_settings
from cinebridge_testkit import wait_for
from cinebridge_testkit.mpps_table import request_errors
from cinebridge_testkit.worklist_peers import FakeMpps, MppsRequest, ServiceProcess
from cinebridge_worklist.app import WorklistApp
from cinebridge_worklist.settings import WorklistSettings
from prometheus_client import REGISTRY
from pydicom.dataset import Dataset

from .conftest import running_worklist, until_serving, worklist_process, worklist_settings

pytestmark = pytest.mark.integration


def sample(name: str, **labels: str) -> float:
    """A metric of the service running in this process (its /metrics shows the same)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
VL_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1"
ITEM_STUDY_UID = "1.2.826.0.1.3680043.10.1351.77"


def ris(mpps_port: int, *, mpps: bool = True) -> WorklistServer:
    # The C-FIND side is not used here: a port where nothing listens.
    return WorklistServer(
        id="ris",
        host="127.0.0.1",
        port=free_port(),
        called_ae="RIS",
        mpps_enabled=mpps,
        mpps_ae="FAKEMPPS",
        mpps_port=mpps_port,
    )


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


@dataclass
class Rig:
    """The worklist service's surroundings in one test: bus, database, MPPS SCP, and how to
    start the service (in this process, or as a process to SIGKILL)."""

    nats_url: str
    database_url: str
    tmp_path: Path
    db: asyncpg.Pool
    client: Bus
    scp: FakeMpps

    def settings(
        self,
        mpps_port: int | None = None,
        servers: list[WorklistServer] | None = None,
        **overrides: Any,
    ) -> WorklistSettings:
        port = self.scp.port if mpps_port is None else mpps_port
        servers = [ris(port)] if servers is None else servers
        fast: dict[str, Any] = {
            "worklist_mpps_timeout_s": 5,
            "worklist_mpps_backoff_s": 0.5,
            "worklist_mpps_backoff_cap_s": 2,
            "worklist_mpps_sweep_interval_s": 1,
            "worklist_mpps_lease_s": 5,
        }
        return worklist_settings(
            self.nats_url, self.database_url, self.tmp_path, servers, **{**fast, **overrides}
        )

    def running(
        self, mpps_port: int | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[WorklistApp]:
        return running_worklist(self.settings(mpps_port, **overrides))

    async def process(self, **overrides: Any) -> ServiceProcess:
        log = self.tmp_path / "worklist.log"
        proc = worklist_process(self.settings(**overrides), log).start()
        await until_serving(self.client)
        return proc

    async def study(self, *, scheduled: bool) -> tuple[uuid.UUID, str]:
        study_id, uid = uuid.uuid4(), f"2.25.{uuid.uuid4().int}"
        await self.db.execute(
            """INSERT INTO studies (id, study_instance_uid, origin, room, patient_name,
                                    patient_id, accession_number, study_id, worklist_item,
                                    modality)
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

    async def step(
        self, study_id: uuid.UUID, *states: str, seq: int = 1, timeout_s: float = 30
    ) -> asyncpg.Record:
        """The study's step `seq`, once it is in one of `states`."""

        async def check() -> asyncpg.Record | None:
            row = await self.db.fetchrow(
                "SELECT * FROM mpps_steps WHERE study_id = $1 AND seq = $2", study_id, seq
            )
            return row if row is not None and row["state"] in states else None

        row: asyncpg.Record = await wait_for(check, timeout_s, what=f"step {seq} in {states}")
        return row

    async def publish(self, *messages: Any) -> None:
        for message in messages:
            await self.client.publish(message)


@pytest.fixture
def scp() -> Any:
    with FakeMpps() as peer:
        yield peer


@pytest.fixture
def rig(
    nats_url: str,
    database_url: str,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    client: Bus,
    scp: FakeMpps,
) -> Rig:
    return Rig(nats_url, database_url, tmp_path, db_pool, client, scp)


@pytest.fixture
async def stopped_at_end(rig: Rig) -> AsyncIterator[list[ServiceProcess]]:
    """Worklist processes a test starts; each is stopped when the test ends."""
    procs: list[ServiceProcess] = []
    yield procs
    for proc in procs:
        proc.stop()


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


def saved(study_id: uuid.UUID, *media: uuid.UUID) -> StudySaved:
    return StudySaved(study_id=str(study_id), media_ids=[str(m) for m in media])


def listed(final: Dataset) -> dict[str, list[str]]:
    """Performed Series Sequence of a final N-SET: series UID → its instances' UIDs."""
    return {
        s.SeriesInstanceUID: sorted(r.ReferencedSOPInstanceUID for r in s.ReferencedImageSequence)
        for s in final.PerformedSeriesSequence
    }


def conforming(scp: FakeMpps) -> dict[str, list[MppsRequest]]:
    """Every request the SCP received, checked against PS3.4 Table F.7.2-1 and answered with
    success (none was an N-SET of a final step, F.7.2.2), per step in the order they came."""
    for request in scp.requests:
        assert request_errors(request.operation, request.dataset) == [], request.operation
        assert request.status == 0x0000, (request.operation, hex(request.status))
    return scp.by_step()


async def test_scheduled_study_created_then_completed_with_every_instance(rig: Rig) -> None:
    events: list[MppsStateChanged] = []

    async def on_state(msg: Any) -> None:
        events.append(MppsStateChanged.from_bytes(msg.data))

    async def up_to_completed() -> list[str] | None:
        states = [e.state for e in events]
        return states if states and states[-1] == "completed" else None

    await rig.client.subscribe_events(MppsStateChanged.subject, on_state)
    scp = rig.scp
    async with rig.running():
        study_id, uid = await rig.study(scheduled=True)
        snap, video = uuid.uuid4(), uuid.uuid4()
        await rig.publish(captured(study_id, snap), captured(study_id, video, "recording"))
        await rig.step(study_id, "in-progress")
        assert [r.operation for r in scp.requests] == ["N-CREATE"]
        ssa = scp.requests[0].dataset.ScheduledStepAttributesSequence[0]
        assert (ssa.StudyInstanceUID, ssa.AccessionNumber, ssa.ScheduledProcedureStepID) == (
            uid,
            "ACC-1",
            "SPS-1",
        )

        # The recording became two instances; until both are here the step stays in progress.
        still = created(study_id, snap, "2.25.100")
        first = created(study_id, video, "2.25.200", 1, 2, VIDEO_ENDOSCOPIC)
        await rig.publish(saved(study_id, snap, video), still, first)
        await wait_for(
            lambda: rig.db.fetchval("SELECT count(*) = 2 FROM mpps_instances"),
            20,
            what="two instances recorded",
        )
        row = await rig.db.fetchrow("SELECT * FROM mpps_steps WHERE study_id = $1", study_id)
        assert row["state"] == "in-progress" and row["final_status"] is None
        second = created(study_id, video, "2.25.200", 2, 2, VIDEO_ENDOSCOPIC)
        await rig.publish(second)
        done = await rig.step(study_id, "completed")
        assert done["last_error"] is None
        seen = await wait_for(up_to_completed, 30, what="state events up to completed")
    assert seen[0] == "pending-create" and seen[-1] == "completed"

    assert [r.operation for r in scp.requests] == ["N-CREATE", "N-SET"]
    final = scp.requests[1].dataset
    assert final.PerformedProcedureStepStatus == "COMPLETED"
    assert listed(final) == {
        "2.25.100": [still.sop_instance_uid],
        "2.25.200": sorted([first.sop_instance_uid, second.sop_instance_uid]),
    }
    assert scp.requests[1].sop_instance_uid == scp.requests[0].sop_instance_uid
    assert len(conforming(scp)) == 1


async def test_unscheduled_study_at_start_and_a_failed_conversion_still_completes(
    rig: Rig,
) -> None:
    await save_station_settings(rig.db, {"mpps_trigger": "study-start"}, "test")
    async with rig.running():
        study_id, uid = await rig.study(scheduled=False)
        await rig.publish(StudyChanged(study_id=str(study_id), change="created"))
        await rig.step(study_id, "in-progress")
        ssa = rig.scp.requests[0].dataset.ScheduledStepAttributesSequence[0]
        assert ssa.StudyInstanceUID == uid and ssa.RequestedProcedureID == ""
        good, bad = uuid.uuid4(), uuid.uuid4()
        await rig.publish(
            captured(study_id, good),
            saved(study_id, good, bad),
            created(study_id, good, "2.25.300"),
            ConversionFailed(media_id=str(bad), study_id=str(study_id), reason="bad file"),
        )
        await rig.step(study_id, "completed")
    assert [r.operation for r in rig.scp.requests] == ["N-CREATE", "N-SET"]
    (series,) = rig.scp.requests[1].dataset.PerformedSeriesSequence
    assert len(series.ReferencedImageSequence) == 1
    assert len(conforming(rig.scp)) == 1


async def test_discontinued_with_a_cid_9300_reason_and_a_later_capture_appends(rig: Rig) -> None:
    async with rig.running():
        study_id, _ = await rig.study(scheduled=True)
        await rig.publish(captured(study_id, uuid.uuid4()))
        await rig.step(study_id, "in-progress")
        late = captured(study_id, uuid.uuid4())  # taken before the end, read after it
        reason = CodedReason(value="110514", meaning="Incorrect worklist entry selected")
        await rig.publish(StudyDiscontinued(study_id=str(study_id), reason=reason))
        await rig.step(study_id, "discontinued")
        # Nothing new in a Save, a capture of before the end: the final step stays as it is
        # (PS3.4 F.7.2.2) and no step opens; a capture afterwards is the append case.
        await rig.publish(saved(study_id), late)
        consumed = _consumed(rig.client, "worklist-mpps-media-captured")
        await wait_for(consumed, 30, what="the late capture read")
        assert await rig.db.fetchval("SELECT count(*) FROM mpps_steps") == 1
        await rig.publish(captured(study_id, uuid.uuid4()))
        await rig.step(study_id, "in-progress", seq=2)
    first, second = conforming(rig.scp).values()
    assert [r.operation for r in first] == ["N-CREATE", "N-SET"]
    final = first[1].dataset
    assert final.PerformedProcedureStepStatus == "DISCONTINUED"
    code = final.PerformedProcedureStepDiscontinuationReasonCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("110514", "DCM")
    assert [r.operation for r in second] == ["N-CREATE"]


async def test_scp_down_is_retried_after_a_restart_nothing_lost_nothing_twice(rig: Rig) -> None:
    port = free_port()
    async with rig.running(port, instance_id="worklist-a"):
        study_id, _ = await rig.study(scheduled=True)
        await rig.publish(captured(study_id, uuid.uuid4()))
        row = await wait_for(
            lambda: rig.db.fetchrow(
                "SELECT * FROM mpps_steps WHERE study_id = $1 AND attempts >= 2", study_id
            ),
            30,
            what="two failed attempts",
        )
        assert row["state"] == "failed-retrying" and not row["created"]
        assert "not answered" in row["last_error"]
    # The service is stopped; the RIS comes back on the same port, then the service.
    with FakeMpps(port=port) as scp:
        async with rig.running(port, instance_id="worklist-b"):
            await rig.step(study_id, "in-progress")
            media = uuid.uuid4()
            await rig.publish(saved(study_id, media), created(study_id, media, "2.25.400"))
            await rig.step(study_id, "completed")
        assert [(r.operation, r.status) for r in scp.requests] == [
            ("N-CREATE", 0x0000),
            ("N-SET", 0x0000),
        ]


async def test_failure_status_is_shown_and_transient_one_retried(rig: Rig) -> None:
    rig.scp.statuses = [0x0110, 0x0120]  # processing failure (retried), then missing attribute
    requests = "cinebridge_worklist_mpps_requests_total"
    retried = sample(requests, server="ris", operation="create", outcome="retry")
    failed = sample(requests, server="ris", operation="create", outcome="failed")
    async with rig.running():
        study_id, _ = await rig.study(scheduled=False)
        await rig.publish(captured(study_id, uuid.uuid4()))
        row = await rig.step(study_id, "failed")

        async def gauged() -> bool:
            return sample("cinebridge_worklist_mpps_steps", state="failed") == 1

        await wait_for(gauged, 20, what="the steps gauge refreshed by the sweeper")
    assert sample(requests, server="ris", operation="create", outcome="retry") == retried + 1
    assert sample(requests, server="ris", operation="create", outcome="failed") == failed + 1
    assert row["last_status"] == 0x0120
    assert "0x0120 missing attribute" in row["last_error"]
    assert [r.status for r in rig.scp.requests] == [0x0110, 0x0120]
    assert row["attempts"] == 2


# -- a new step where a final one cannot change, across a SIGKILL of the service --------------


async def test_append_case_is_a_new_step_with_the_same_scheduled_step(
    rig: Rig, stopped_at_end: list[ServiceProcess]
) -> None:
    """IHE RAD TF-2 4.6.4.1.2.4 (append case): media saved after the step COMPLETED are
    reported in a new step (its own SOP Instance UID, the same Scheduled Step Attributes
    Sequence) whose N-SET lists only them; the completed step is never set again."""
    stopped_at_end.append(proc := await rig.process())
    study_id, _ = await rig.study(scheduled=True)
    first_media, later_media = uuid.uuid4(), uuid.uuid4()
    first = created(study_id, first_media, "2.25.500")
    await rig.publish(captured(study_id, first_media), saved(study_id, first_media), first)
    await rig.step(study_id, "completed")
    await rig.publish(captured(study_id, later_media))
    await rig.step(study_id, "in-progress", seq=2)
    proc.kill()
    # While the service is down: the Save lists every media item of the study, as the gateway
    # sends it; only the new one is converted.
    later = created(study_id, later_media, "2.25.501")
    await rig.publish(saved(study_id, first_media, later_media), later)
    proc.start()
    await until_serving(rig.client)
    await rig.step(study_id, "completed", seq=2, timeout_s=60)

    steps = conforming(rig.scp)
    assert len(steps) == 2
    (one_create, one_set), (two_create, two_set) = steps.values()
    assert [r.operation for r in (one_create, one_set, two_create, two_set)] == [
        "N-CREATE",
        "N-SET",
        "N-CREATE",
        "N-SET",
    ]
    assert (
        two_create.dataset.ScheduledStepAttributesSequence
        == one_create.dataset.ScheduledStepAttributesSequence
    )
    assert two_create.dataset.ScheduledStepAttributesSequence[0].ScheduledProcedureStepID == (
        "SPS-1"
    )
    assert (
        two_create.dataset.PerformedProcedureStepID != one_create.dataset.PerformedProcedureStepID
    )
    assert listed(one_set.dataset) == {"2.25.500": [first.sop_instance_uid]}
    assert listed(two_set.dataset) == {"2.25.501": [later.sop_instance_uid]}


async def _reconcile(db: asyncpg.Pool, study_id: uuid.UUID) -> None:
    """What the study catalog does when the operator links the study to a worklist item
    (statement Table 38): the item's identity and data, and its event."""
    await db.execute(
        """UPDATE studies SET study_instance_uid = $2, origin = 'worklist',
               patient_name = 'Roe^Anna', patient_id = 'P9', accession_number = 'ACC-1',
               study_id = 'RP-1', worklist_item = $3, modality = 'ES' WHERE id = $1""",
        study_id,
        ITEM_STUDY_UID,
        {**WORKLIST_ITEM, "0020000D": {"vr": "UI", "Value": [ITEM_STUDY_UID]}},
    )


async def test_reconciled_after_its_unscheduled_n_create_discontinues_and_relinks(
    rig: Rig, stopped_at_end: list[ServiceProcess]
) -> None:
    """IHE RAD TF-2 4.7.4.1.3: the unscheduled step cannot take the item (the Scheduled Step
    Attributes Sequence is not N-SET-able, PS3.4 F.7.2): it ends DISCONTINUED with (110514,
    DCM, "Incorrect worklist entry selected") and a new step linked to the item reports the
    study."""
    stopped_at_end.append(proc := await rig.process())
    study_id, own_uid = await rig.study(scheduled=False)
    media = uuid.uuid4()
    await rig.publish(captured(study_id, media))
    await rig.step(study_id, "in-progress")
    proc.kill()
    await _reconcile(rig.db, study_id)
    await rig.publish(StudyChanged(study_id=str(study_id), change="reconciled"))
    proc.start()
    await until_serving(rig.client)
    await rig.step(study_id, "discontinued", timeout_s=60)
    await rig.step(study_id, "in-progress", seq=2)
    instance = created(study_id, media, "2.25.600")
    await rig.publish(saved(study_id, media), instance)
    await rig.step(study_id, "completed", seq=2)

    steps = conforming(rig.scp)
    assert len(steps) == 2
    (old_create, old_set), (new_create, new_set) = steps.values()
    old_ssa = old_create.dataset.ScheduledStepAttributesSequence[0]
    assert (old_ssa.StudyInstanceUID, old_ssa.ScheduledProcedureStepID) == (own_uid, "")
    assert old_set.dataset.PerformedProcedureStepStatus == "DISCONTINUED"
    (why,) = old_set.dataset.PerformedProcedureStepDiscontinuationReasonCodeSequence
    assert (why.CodeValue, why.CodingSchemeDesignator, why.CodeMeaning) == (
        "110514",
        "DCM",
        "Incorrect worklist entry selected",
    )
    assert old_set.dataset.PerformedSeriesSequence == []
    new_ssa = new_create.dataset.ScheduledStepAttributesSequence[0]
    assert (
        new_ssa.StudyInstanceUID,
        new_ssa.AccessionNumber,
        new_ssa.RequestedProcedureID,
        new_ssa.ScheduledProcedureStepID,
    ) == (ITEM_STUDY_UID, "ACC-1", "RP-1", "SPS-1")
    assert (str(new_create.dataset.PatientName), new_create.dataset.PatientID) == (
        "Roe^Anna",
        "P9",
    )
    assert new_set.dataset.PerformedProcedureStepStatus == "COMPLETED"
    assert listed(new_set.dataset) == {"2.25.600": [instance.sop_instance_uid]}


async def upsert(client: Bus, server: WorklistServer) -> WorklistServer:
    reply = await client.request(
        WorklistServerUpsert(server=server, by="test"), WorklistServersReply, 30
    )
    assert reply.ok, reply.error
    (stored,) = reply.servers
    return stored


def _consumed(client: Bus, durable: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        info = await client.js.consumer_info("CB_EVENTS", durable)
        return info.num_pending == 0 and info.num_ack_pending == 0

    return check


async def test_mpps_enabled_in_the_middle_of_a_study_still_reports_a_whole_step(
    rig: Rig, stopped_at_end: list[ServiceProcess]
) -> None:
    """Captured while no worklist server had an MPPS SCP; the RIS's MPPS is set up before the
    Save: the Save opens the step, and its N-SET COMPLETED lists every series and instance."""
    # Servers set up on the settings page (no seed, which a restart would apply again).
    stopped_at_end.append(proc := await rig.process(servers=[]))
    await upsert(rig.client, ris(rig.scp.port, mpps=False))
    study_id, uid = await rig.study(scheduled=True)
    snap, video = uuid.uuid4(), uuid.uuid4()
    await rig.publish(captured(study_id, snap), captured(study_id, video, "recording"))
    consumed = _consumed(rig.client, "worklist-mpps-media-captured")
    await wait_for(consumed, 60, what="the captures read (no MPPS SCP yet)")
    assert await rig.db.fetchval("SELECT count(*) FROM mpps_steps") == 0
    assert (await upsert(rig.client, ris(rig.scp.port))).mpps_enabled
    proc.kill()
    # While the service is down: Save, and the converter's instances, read in any order after.
    still = created(study_id, snap, "2.25.700")
    parts = [created(study_id, video, "2.25.701", n, 2, VIDEO_ENDOSCOPIC) for n in (1, 2)]
    await rig.publish(*parts, saved(study_id, snap, video), still)
    proc.start()
    await until_serving(rig.client)
    await rig.step(study_id, "completed", timeout_s=60)

    (step,) = conforming(rig.scp).values()
    create, final = step
    assert (create.operation, final.operation) == ("N-CREATE", "N-SET")
    assert create.dataset.ScheduledStepAttributesSequence[0].StudyInstanceUID == uid
    assert final.dataset.PerformedProcedureStepStatus == "COMPLETED"
    assert listed(final.dataset) == {
        "2.25.700": [still.sop_instance_uid],
        "2.25.701": sorted(p.sop_instance_uid for p in parts),
    }
