"""Storage Commitment Push Model on the station's SCP (PS3.4 Annex J) with pynetdicom peers:
a modality asks for commitment (report on the same association, and on a new association back
to it), an unknown instance is in the Failed SOP Sequence with 0112, a report owed on a new
association survives a SIGKILL of the SCP between the N-ACTION-RSP and the N-EVENT-REPORT, and
an archive's report for the sender is stored in JetStream before it is answered."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pydicom
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import CommitmentReported
from cinebridge_testkit import kill_process, stop_process, wait_for
from cinebridge_testkit.commitment_peers import commitment_dataset, report_on_new_association
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
WELL_KNOWN = "1.2.840.10008.1.20.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
TIMEOUT = 20.0


def action(refs: list[tuple[str, str]]) -> tuple[str, Dataset]:
    uid = generate_uid()
    return uid, commitment_dataset(uid, refs)


class Reports:
    """N-EVENT-REPORTs a pynetdicom peer received, with the status it answered."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()

    def handle(self, event: Any) -> tuple[int, None]:
        self.received.append((int(event.event_type), event.event_information))
        self.arrived.set()
        return 0x0000, None


def request_commitment(
    port: int, called: str, refs: list[tuple[str, str]], reports: Reports, wait: bool
) -> tuple[str, int]:
    """N-ACTION from a pynetdicom SCU "MODALITY"; with `wait` the association stays open until
    the report came on it."""
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    ae.add_requested_context(STORAGE_COMMITMENT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    handlers = [(evt.EVT_N_EVENT_REPORT, reports.handle)]
    assoc = ae.associate("127.0.0.1", port, ae_title=called, evt_handlers=handlers)
    assert assoc.is_established
    uid, ds = action(refs)
    try:
        status, _ = assoc.send_n_action(ds, 1, STORAGE_COMMITMENT, WELL_KNOWN)
        if wait:
            assert reports.arrived.wait(TIMEOUT), "no N-EVENT-REPORT on the association"
    finally:
        assoc.release()
    return uid, int(status.Status)


def references(report: Dataset, sequence: str) -> dict[str, int | None]:
    return {
        str(i.ReferencedSOPInstanceUID): (int(i.FailureReason) if "FailureReason" in i else None)
        for i in report.get(sequence, [])
    }


async def stored(scp: Any, dicom: Any, tmp_path: Path, n: int) -> list[tuple[str, str]]:
    paths = [dicom.make_ct(tmp_path / f"ct{k}.dcm", size=16) for k in range(n)]
    statuses = await asyncio.to_thread(dicom.store, scp.port, scp.ae_title, paths)
    assert statuses == [0] * n
    return [(CT, _uid(p)) for p in paths]


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


async def test_report_on_the_same_association_and_an_unknown_instance(
    scp: Any, dicom: Any, tmp_path: Path
) -> None:
    refs = await stored(scp, dicom, tmp_path, 2)
    unknown = (CT, generate_uid())
    reports = Reports()
    uid, status = await asyncio.to_thread(
        request_commitment, scp.port, scp.ae_title, [*refs, unknown], reports, True
    )
    assert status == 0x0000
    assert len(reports.received) == 1
    event_type, report = reports.received[0]
    assert event_type == 2  # failures present (PS3.4 Table J.3-2)
    assert report.TransactionUID == uid
    assert references(report, "ReferencedSOPSequence") == {r[1]: None for r in refs}
    assert references(report, "FailedSOPSequence") == {unknown[1]: 0x0112}


async def test_every_instance_stored_is_event_type_1(scp: Any, dicom: Any, tmp_path: Path) -> None:
    refs = await stored(scp, dicom, tmp_path, 3)
    reports = Reports()
    _, status = await asyncio.to_thread(
        request_commitment, scp.port, scp.ae_title, refs, reports, True
    )
    assert status == 0x0000
    event_type, report = reports.received[0]
    assert event_type == 1
    assert "FailedSOPSequence" not in report
    assert set(references(report, "ReferencedSOPSequence")) == {r[1] for r in refs}


@contextmanager
def modality_listener(port: int, reports: Reports) -> Iterator[None]:
    """The requester "MODALITY" listening for its report on `port`: it accepts the SCP role
    that the station's SCP proposes for the SOP class (PS3.4 J.3.3)."""
    listener = AE(ae_title="MODALITY")
    listener.add_supported_context(
        STORAGE_COMMITMENT,
        [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        scu_role=True,
        scp_role=True,
    )
    server = listener.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)]
    )
    try:
        yield
    finally:
        server.shutdown()


def report_back_to(port: int) -> str:
    return json.dumps(
        [{"ae_title": "MODALITY", "host": "127.0.0.1", "port": port, "report": "new"}]
    )


async def test_report_on_a_new_association_back_to_the_requester(
    scp_factory: Any, dicom: Any, tmp_path: Path
) -> None:
    reports = Reports()
    port = free_port()
    with modality_listener(port, reports):
        async with scp_factory(scp_commitment_peers=report_back_to(port)) as scp:
            refs = await stored(scp, dicom, tmp_path, 2)
            uid, status = await asyncio.to_thread(
                request_commitment, scp.port, scp.ae_title, refs, Reports(), False
            )
            assert status == 0x0000
            assert await asyncio.to_thread(reports.arrived.wait, TIMEOUT), "no report came back"
    event_type, report = reports.received[0]
    assert event_type == 1 and report.TransactionUID == uid
    assert set(references(report, "ReferencedSOPSequence")) == {r[1] for r in refs}


class ScpProcess:
    """The station's SCP as its own process (`python -m cinebridge_scp`), so a test can kill it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cinebridge_scp"],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=out,
            )

    async def answering(self, echo: Callable[[int, str], int], port: int) -> None:
        async def echoes() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-4000:]
            return await asyncio.to_thread(echo, port, "CINEBRIDGE") == 0

        await wait_for(echoes, 120, 0.2, what="the SCP process answering C-ECHO")


async def _owed(pool: asyncpg.Pool) -> bool:
    # Tried at least once (the requester is not listening yet) and not in flight.
    return bool(
        await pool.fetchval(
            """SELECT count(*) = 1 FROM scp_commitment_reports
               WHERE state = 'owed' AND attempts >= 1 AND leased_until IS NULL"""
        )
    )


async def test_a_report_owed_on_a_new_association_survives_a_kill_of_the_scp(
    nats_url: str, database_url: str, db_pool: asyncpg.Pool, dicom: Any, tmp_path: Path
) -> None:
    back = free_port()
    scp_port = free_port()
    scp = ScpProcess(
        {
            "CB_NATS_URL": nats_url,
            "CB_DATABASE_URL": database_url,
            "CB_MEDIA_ROOT": str(tmp_path / "media"),
            "CB_INSTANCE_ID": "scp-kill-test",
            "CB_HEALTH_PORT": "0",
            "CB_SCP_PORT": str(scp_port),
            "CB_SCP_COMMITMENT_PEERS": report_back_to(back),
            "CB_SCP_COMMITMENT_REPORT_BACKOFF_S": "0.5",
            "CB_SCP_COMMITMENT_REPORT_BACKOFF_CAP_S": "2",
            "CB_SCP_COMMITMENT_REPORT_POLL_S": "1",
            "CB_SCP_COMMITMENT_REPORT_DIMSE_S": "5",
        },
        tmp_path / "scp.log",
    )
    reports = Reports()
    try:
        scp.start()
        await scp.answering(dicom.echo, scp_port)
        paths = [dicom.make_ct(tmp_path / f"ct{k}.dcm", size=16) for k in range(2)]
        assert await asyncio.to_thread(dicom.store, scp_port, "CINEBRIDGE", paths) == [0, 0]
        refs = [(CT, _uid(p)) for p in paths]
        unknown = (CT, generate_uid())
        # The requester releases at once and listens only later: the report stays owed.
        uid, status = await asyncio.to_thread(
            request_commitment, scp_port, "CINEBRIDGE", [*refs, unknown], Reports(), False
        )
        assert status == 0x0000
        await wait_for(lambda: _owed(db_pool), 120, 0.2, what="the report owed and tried")
        kill_process(scp.proc)
        with modality_listener(back, reports):
            scp.start()
            arrived = await asyncio.to_thread(reports.arrived.wait, 120)
            assert arrived, scp.log.read_text()[-4000:]
    finally:
        stop_process(scp.proc)
    assert len(reports.received) == 1
    event_type, report = reports.received[0]
    assert event_type == 2 and report.TransactionUID == uid
    assert references(report, "ReferencedSOPSequence") == {r[1]: None for r in refs}
    assert references(report, "FailedSOPSequence") == {unknown[1]: 0x0112}
    row = await db_pool.fetchrow("SELECT state, last_status FROM scp_commitment_reports")
    assert row is not None and (row["state"], row["last_status"]) == ("sent", 0x0000)


async def test_a_requester_never_listening_is_tried_then_its_report_abandoned_and_kept(
    scp_factory: Any, db_pool: asyncpg.Pool
) -> None:
    nobody = free_port()
    settings = {
        "scp_commitment_peers": report_back_to(nobody),
        "scp_commitment_report_attempts": 2,
        "scp_commitment_report_backoff_s": 0.2,
        "scp_commitment_report_poll_s": 0.5,
    }
    async with scp_factory(**settings) as scp:
        unknown = (CT, generate_uid())
        uid, status = await asyncio.to_thread(
            request_commitment, scp.port, scp.ae_title, [unknown], Reports(), False
        )
        assert status == 0x0000

        async def abandoned() -> bool:
            state = await db_pool.fetchval("SELECT state FROM scp_commitment_reports")
            return bool(state == "abandoned")

        await wait_for(abandoned, 120, 0.2, what="the report abandoned after its attempts")
    row = await db_pool.fetchrow("SELECT * FROM scp_commitment_reports")
    assert row is not None
    assert (row["transaction_uid"], row["requester_ae"], row["port"]) == (uid, "MODALITY", nobody)
    assert row["attempts"] == 2 and row["finished_at"] is not None
    assert "cannot connect" in row["last_error"]
    assert row["report"]["failed"] == [[CT, unknown[1], 0x0112]]


async def test_an_archive_report_is_stored_in_jetstream_before_it_is_answered(
    scp: Any, nats_url: str
) -> None:
    uid, ok, bad = generate_uid(), generate_uid(), generate_uid()
    # Addressed to the AE title the archive knows the station by (the sender's calling AE,
    # statement Table 25 SPACS), not this SCP's: accepted for a report, refused for storage.
    status = await asyncio.to_thread(
        report_on_new_association, scp.port, "SPACS", uid, [(CT, ok)], [(CT, bad)]
    )
    assert status == 0x0000
    refused = AE(ae_title="ARCHIVE")
    refused.add_requested_context(CT, [ExplicitVRLittleEndian])
    storage = await asyncio.to_thread(refused.associate, "127.0.0.1", scp.port, ae_title="SPACS")
    assert storage.is_rejected
    bus = await Bus.connect(nats_url, "scp-commitment-test")
    try:
        # Read back from the stream itself: the report is there for a sender that starts later.
        msg = await bus.js.get_last_msg("CB_EVENTS", CommitmentReported.subject)
    finally:
        await bus.close()
    event = CommitmentReported.from_bytes(msg.data)
    assert event.transaction_uid == uid and event.calling_ae == "ARCHIVE"
    assert {(r.sop_instance_uid, r.failure_reason) for r in event.references} == {
        (ok, None),
        (bad, 0x0112),
    }
