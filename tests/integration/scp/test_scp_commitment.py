"""Storage Commitment Push Model on the station's SCP (PS3.4 Annex J) with pynetdicom peers:
a modality asks for commitment (report on the same association, and on a new association back
to it), an unknown instance is in the Failed SOP Sequence with 0112, and an archive's report
for the sender is stored in JetStream before it is answered."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pydicom
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import CommitmentReported
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_context, evt

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
WELL_KNOWN = "1.2.840.10008.1.20.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
TIMEOUT = 20.0


def action(refs: list[tuple[str, str]]) -> tuple[str, Dataset]:
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return str(ds.TransactionUID), ds


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


async def test_report_on_a_new_association_back_to_the_requester(
    scp_factory: Any, dicom: Any, tmp_path: Path
) -> None:
    reports = Reports()
    listener = AE(ae_title="MODALITY")
    # The SCP proposes the SCP role for the SOP class (PS3.4 J.3.3): accepted here.
    listener.add_supported_context(
        STORAGE_COMMITMENT,
        [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        scu_role=True,
        scp_role=True,
    )
    port = free_port()
    server = listener.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)]
    )
    peers = json.dumps(
        [{"ae_title": "MODALITY", "host": "127.0.0.1", "port": port, "report": "new"}]
    )
    try:
        async with scp_factory(scp_commitment_peers=peers) as scp:
            refs = await stored(scp, dicom, tmp_path, 2)
            uid, status = await asyncio.to_thread(
                request_commitment, scp.port, scp.ae_title, refs, Reports(), False
            )
            assert status == 0x0000
            assert await asyncio.to_thread(reports.arrived.wait, TIMEOUT), "no report came back"
    finally:
        server.shutdown()
    event_type, report = reports.received[0]
    assert event_type == 1 and report.TransactionUID == uid
    assert set(references(report, "ReferencedSOPSequence")) == {r[1] for r in refs}


def send_report(port: int, called: str, uid: str, committed: list[str], failed: list[str]) -> int:
    """An archive's N-EVENT-REPORT on an association it opens as the SCP of the class."""
    ae = AE(ae_title="ARCHIVE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    context = build_context(STORAGE_COMMITMENT, [ExplicitVRLittleEndian])
    context.scu_role, context.scp_role = False, True
    assoc = ae.associate("127.0.0.1", port, ae_title=called, contexts=[context])
    assert assoc.is_established
    ds = Dataset()
    ds.TransactionUID = uid
    ds.ReferencedSOPSequence = [_ref(u) for u in committed]
    if failed:
        items = [_ref(u) for u in failed]
        for item in items:
            item.FailureReason = 0x0112
        ds.FailedSOPSequence = items
    try:
        status, _ = assoc.send_n_event_report(
            ds, 2 if failed else 1, STORAGE_COMMITMENT, WELL_KNOWN
        )
        return int(status.Status)
    finally:
        assoc.release()


def _ref(uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = CT
    item.ReferencedSOPInstanceUID = uid
    return item


async def test_an_archive_report_is_stored_in_jetstream_before_it_is_answered(
    scp: Any, nats_url: str
) -> None:
    uid, ok, bad = generate_uid(), generate_uid(), generate_uid()
    # Addressed to the AE title the archive knows the station by (the sender's calling AE,
    # statement Table 25 SPACS), not this SCP's: accepted for a report, refused for storage.
    status = await asyncio.to_thread(send_report, scp.port, "SPACS", uid, [ok], [bad])
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
