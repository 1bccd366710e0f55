"""Associations end to end over loopback: our requestor against our acceptor (every DIMSE
message of the package) and each of them against pynetdicom, the reference peer."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cinebridge_dicom import dimse, fsm, requestor
from cinebridge_dicom.acceptor import AcceptorAssociation
from cinebridge_dicom.ae import ApplicationEntity, Server
from cinebridge_dicom.events import Evt, Rejection
from pydicom.dataset import Dataset, FileMetaDataset
from pynetdicom import AE, build_context, evt

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MPPS = "1.2.840.10008.3.1.2.3.3"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
MWL = "1.2.840.10008.5.1.4.31"
ILE = "1.2.840.10008.1.2"


class Sink:
    def __init__(self, received: list[bytes]) -> None:
        self.data = bytearray()
        self.received = received

    def write(self, data: memoryview) -> int:
        self.data += data
        return len(data)

    def finish(self) -> int:
        self.received.append(bytes(self.data))
        return 0x0000

    def discard(self) -> None:
        self.received.append(b"discarded")


@pytest.fixture
def ours() -> Iterator[tuple[Server, dict[str, Any]]]:
    seen: dict[str, Any] = {"stored": [], "n": [], "released": 0, "states": []}

    def requested(assoc: AcceptorAssociation, rq: Any) -> Rejection | None:
        return (
            Rejection(1, 1, 3, "calling AE title not recognised")
            if rq.calling_ae == "BAD"
            else None
        )

    def store(assoc: AcceptorAssociation, context: Any, rq: dimse.Command) -> Sink:
        return Sink(seen["stored"])

    def find(
        assoc: AcceptorAssociation, context: Any, rq: dimse.Command, data: bytes | None
    ) -> Any:
        yield 0xFF00, b"\x10\x00\x10\x00\x04\x00\x00\x00DOE^"
        yield 0xFF00, b"\x10\x00\x10\x00\x04\x00\x00\x00ROE^"
        yield 0x0000, None

    def n_any(
        assoc: AcceptorAssociation, context: Any, rq: dimse.Command, data: bytes | None
    ) -> Any:
        seen["n"].append((rq.field, rq.sop_instance_uid, data))
        yield 0x0000, None

    def released(assoc: AcceptorAssociation) -> None:
        seen["released"] += 1

    ae = ApplicationEntity("OURS", "1.2.3.4", "TEST_01", acse_timeout_s=5, network_timeout_s=5)
    for abstract in (VERIFICATION, CT, MPPS, STORAGE_COMMITMENT, MWL):
        ae.add_supported_context(abstract, [ILE])
    server = ae.start_server(
        ("127.0.0.1", 0),
        [
            (Evt.REQUESTED, requested),
            (Evt.C_STORE, store),
            (Evt.C_FIND, find),
            (Evt.N_CREATE, n_any),
            (Evt.N_SET, n_any),
            (Evt.N_ACTION, n_any),
            (Evt.N_EVENT_REPORT, n_any),
            (Evt.RELEASED, released),
        ],
    )
    try:
        yield server, seen
    finally:
        server.shutdown()


def requestor_ae(calling: str = "SCU") -> ApplicationEntity:
    ae = ApplicationEntity(calling, "1.2.3.5", "TEST_02", acse_timeout_s=5, dimse_timeout_s=5)
    for abstract in (VERIFICATION, CT, MPPS, STORAGE_COMMITMENT, MWL):
        ae.add_requested_context(abstract, [ILE])
    return ae


def test_every_dimse_message_between_our_requestor_and_our_acceptor(ours: Any) -> None:
    server, seen = ours
    assoc = requestor_ae().associate("127.0.0.1", server.port, "OURS")
    assoc.fsm.trace = []
    assert assoc.send_c_echo() == 0x0000
    data = bytes(range(256)) * 4000  # ~1 MB: several PDUs, streamed from a file object
    ct = assoc.context_for(CT)
    assert ct is not None
    assert assoc.send_c_store(ct, CT, "1.2.3.9", io.BytesIO(data)) == 0x0000
    mwl = assoc.context_for(MWL)
    assert mwl is not None
    found = list(assoc.send_c_find(mwl, b"\x10\x00\x10\x00\x00\x00\x00\x00", time.monotonic() + 5))
    assert [m.status for m in found] == [0xFF00, 0xFF00, 0x0000]
    assert found[1].dataset is not None and found[1].dataset.endswith(b"ROE^")
    mpps = assoc.context_for(MPPS)
    commitment = assoc.context_for(STORAGE_COMMITMENT)
    assert mpps is not None and commitment is not None
    assert assoc.send_n(mpps, dimse.N_CREATE_RQ, "1.2.9", b"").status == 0x0000
    assert assoc.send_n(mpps, dimse.N_SET_RQ, "1.2.9", b"").status == 0x0000
    action = assoc.send_n(commitment, dimse.N_ACTION_RQ, "1.2.840.10008.1.20.1.1", b"", type_id=1)
    assert action.status == 0x0000 and action.command.elements[dimse.ACTION_TYPE_ID] == b"\x01\x00"
    report = assoc.send_n(commitment, dimse.N_EVENT_REPORT_RQ, "1.2.840.10008.1.20.1.1", None, 1)
    assert report.status == 0x0000
    assoc.release()
    assert assoc.fsm.state is fsm.State.STA1
    assert seen["stored"] == [data]
    assert [f for f, _, _ in seen["n"]] == [0x0140, 0x0120, 0x0130, 0x0100]
    actions = [a for _, _, a in assoc.fsm.trace]
    # One P-DATA request per request message (the C-STORE's PDUs are gathered into one), one
    # P-DATA indication per response PDU, then the release.
    assert actions.count("DT-1") == 7 and actions[-2:] == ["AR-1", "AR-3"]


def test_our_acceptor_rejects_as_its_handler_says(ours: Any) -> None:
    server, _ = ours
    with pytest.raises(requestor.Rejected) as info:
        requestor_ae("BAD").associate("127.0.0.1", server.port, "OURS")
    assert not info.value.transient and "calling AE title" in info.value.reason


def test_pynetdicom_requestor_against_our_acceptor(ours: Any) -> None:
    server, seen = ours
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(VERIFICATION, ILE)
    ae.add_requested_context(CT, ILE)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="OURS")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientName = CT, "1.2.3.10", "DOE^JANE"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ILE
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    assert assoc.is_released
    assert len(seen["stored"]) == 1 and b"DOE^JANE" in seen["stored"][0]


@pytest.fixture
def pynetdicom_scp() -> Iterator[tuple[int, dict[str, Any]]]:
    seen: dict[str, Any] = {"stored": [], "abort_on_store": False}

    def store(event: Any) -> int:
        if seen["abort_on_store"]:
            event.assoc.abort()
            return 0xC000
        seen["stored"].append(event.dataset.SOPInstanceUID)
        return 0x0000

    ae = AE(ae_title="PYSCP")
    ae.supported_contexts = [build_context(VERIFICATION, ILE), build_context(CT, ILE)]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        yield int(server.server_address[1]), seen
    finally:
        server.shutdown()


def _ct_bytes(uid: str) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientName = CT, uid, "DOE^JOHN"
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    return buffer.getvalue()


def test_our_requestor_against_pynetdicom_and_its_abort(pynetdicom_scp: Any) -> None:
    port, seen = pynetdicom_scp
    ae = ApplicationEntity("OURSCU", "1.2.3.5", "TEST_02", acse_timeout_s=5, dimse_timeout_s=5)
    ae.add_requested_context(VERIFICATION, [ILE])
    ae.add_requested_context(CT, [ILE])
    assoc = ae.associate("127.0.0.1", port, "PYSCP")
    assert assoc.send_c_echo() == 0x0000
    ct = assoc.context_for(CT, ILE)
    assert ct is not None
    assert assoc.send_c_store(ct, CT, "1.2.3.11", io.BytesIO(_ct_bytes("1.2.3.11"))) == 0
    seen["abort_on_store"] = True
    with pytest.raises(requestor.Aborted) as info:
        assoc.send_c_store(ct, CT, "1.2.3.12", io.BytesIO(_ct_bytes("1.2.3.12")))
    assert info.value.transient and "A-ABORT" in info.value.reason
    assert assoc.fsm.state is fsm.State.STA1 and not assoc.is_established
    assert seen["stored"] == ["1.2.3.11"]


def test_a_response_to_another_message_aborts() -> None:
    """PS3.7 9.3.1.2: a C-ECHO-RSP whose Message ID Being Responded To is not ours."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    got_abort = threading.Event()

    def serve() -> None:
        from cinebridge_dicom import pdu

        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            rq_contexts = [(1, 0, ILE)]
            body = bytes(4) + b"OURS".ljust(16) + b"SCU".ljust(16) + bytes(32)
            body += pdu.item(0x10, pdu.APPLICATION_CONTEXT.encode())
            for cid, result, ts in rq_contexts:
                body += pdu.item(0x21, bytes([cid, 0, result, 0]) + pdu.item(0x40, ts.encode()))
            body += pdu.item(0x50, pdu.item(0x51, (16384).to_bytes(4, "big")))
            conn.sendall(bytes([2, 0]) + len(body).to_bytes(4, "big") + body)
            conn.recv(65536)  # the C-ECHO-RQ (message 1)
            wrong = dimse.response_to(dimse.Command(dimse.C_ECHO_RQ, 99, False, {}), 0x0000)
            conn.sendall(pdu.p_data(1, 0x03, wrong))
            conn.settimeout(5)
            if conn.recv(10)[:1] == b"\x07":
                got_abort.set()
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ae = ApplicationEntity("SCU", "1.2.3.5", "TEST_02", acse_timeout_s=5, dimse_timeout_s=5)
    ae.add_requested_context(VERIFICATION, [ILE])
    assoc = ae.associate("127.0.0.1", port, "OURS")
    with pytest.raises(requestor.Aborted, match="answering message 99"):
        assoc.send_c_echo()
    thread.join(10)
    assert got_abort.is_set()


def test_a_c_cancel_after_the_final_response_is_ignored(ours: Any) -> None:
    server, _ = ours
    assoc = requestor_ae().associate("127.0.0.1", server.port, "OURS")
    mwl = assoc.context_for(MWL)
    assert mwl is not None
    responses = assoc.send_c_find(mwl, b"", time.monotonic() + 5)
    assert [m.status for m in responses] == [0xFF00, 0xFF00, 0x0000]
    assoc.cancel(mwl, assoc.message_id)  # late: the final response was sent
    assert assoc.send_c_echo() == 0x0000  # still established: the C-CANCEL aborted nothing
    assoc.release()
