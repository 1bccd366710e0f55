"""C-FIND streamed as it is matched, and C-CANCEL (PS3.7 9.1.2, 9.3.2.3), between our acceptor
and our requestor, pynetdicom and DCMTK `findscu` in both roles where they have it.

The acceptor's handler here yields matches without end: only a C-CANCEL that the acceptor reads
between two responses ends the operation, so a test that passes proves the cancel took effect
(without it the requestor's deadline expires)."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cinebridge_dicom import dimse, requestor
from cinebridge_dicom.acceptor import AcceptorAssociation
from cinebridge_dicom.ae import ApplicationEntity, Server
from cinebridge_dicom.events import Evt
from cinebridge_testkit import require_tool
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

MWL = "1.2.840.10008.5.1.4.31"
ILE = "1.2.840.10008.1.2"
VERIFICATION = "1.2.840.10008.1.1"
CANCEL, PENDING, SUCCESS = 0xFE00, 0xFF00, 0x0000


def patient(n: int) -> bytes:
    """(0010,0010) Patient's Name in Implicit VR Little Endian: one match's identifier."""
    name = f"DOE^{n:06d}".encode()
    return b"\x10\x00\x10\x00" + len(name).to_bytes(4, "little") + name


class EndlessMatches:
    """A C-FIND handler that matches without end and records how it was stopped."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.saw_cancel = False

    def __call__(
        self, assoc: AcceptorAssociation, context: Any, rq: dimse.Command, data: bytes | None
    ) -> Iterator[tuple[int, bytes | None]]:
        try:
            for n in itertools.count():
                if assoc.is_cancelled:
                    self.saw_cancel = True
                yield PENDING, patient(n)
        finally:
            self.closed.set()


@pytest.fixture
def endless() -> Iterator[tuple[Server, EndlessMatches]]:
    handler = EndlessMatches()
    ae = ApplicationEntity("FINDSCP", "1.2.3.4", "TEST_01", acse_timeout_s=5, network_timeout_s=5)
    ae.add_supported_context(MWL, [ILE])
    ae.add_supported_context(VERIFICATION, [ILE])
    server = ae.start_server(("127.0.0.1", 0), [(Evt.C_FIND, handler)])
    try:
        yield server, handler
    finally:
        server.shutdown()


def test_our_requestor_cancels_a_find_our_acceptor_streams(endless: Any) -> None:
    server, handler = endless
    ae = ApplicationEntity("SCU", "1.2.3.5", "TEST_02", acse_timeout_s=5, dimse_timeout_s=10)
    ae.add_requested_context(MWL, [ILE])
    ae.add_requested_context(VERIFICATION, [ILE])
    assoc = ae.associate("127.0.0.1", server.port, "FINDSCP")
    mwl = assoc.context_for(MWL)
    assert mwl is not None
    statuses: list[int | None] = []
    names: list[bytes] = []
    for message in assoc.send_c_find(mwl, patient(0), time.monotonic() + 60):
        statuses.append(message.status)
        if message.dataset is not None:
            names.append(message.dataset)
        if len(statuses) == 3:
            assoc.cancel(mwl, assoc.message_id)
    # Pending responses already on their way still arrive; the last one says Cancel.
    assert statuses[-1] == CANCEL and set(statuses[:-1]) == {PENDING}
    assert names[:3] == [patient(0), patient(1), patient(2)]
    assert handler.closed.wait(10), "the handler's generator was not closed"
    assert assoc.send_c_echo() == SUCCESS  # the association goes on after the cancel
    assoc.release()
    assert assoc.fsm.state.name == "STA1"


def test_pynetdicom_cancels_a_find_our_acceptor_streams(endless: Any) -> None:
    server, handler = endless
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(MWL, ILE)
    ae.dimse_timeout = 30
    assoc = ae.associate("127.0.0.1", server.port, ae_title="FINDSCP")
    assert assoc.is_established
    query = Dataset()
    query.PatientName = "*"
    statuses: list[int] = []
    try:
        responses = assoc.send_c_find(query, ModalityWorklistInformationFind, msg_id=7)
        for status, _identifier in responses:
            assert status is not None, "no response within the DIMSE timeout"
            statuses.append(int(status.Status))
            if len(statuses) == 3:
                assoc.send_c_cancel(7, context_id=1)
    finally:
        assoc.release()
    assert statuses[-1] == CANCEL and set(statuses[:-1]) == {PENDING}
    assert handler.closed.wait(10)


def test_dcmtk_findscu_cancels_a_find_our_acceptor_streams(endless: Any) -> None:
    server, handler = endless
    findscu = require_tool("findscu")
    done = subprocess.run(
        [findscu, "-v", "-W", "-aec", "FINDSCP", "-k", "PatientName=*", "--cancel", "3",
         "127.0.0.1", str(server.port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Received Final Find Response (Cancel" in output, output
    assert handler.closed.wait(10)


def test_our_requestor_cancels_a_find_pynetdicom_streams() -> None:
    stopped = threading.Event()

    def handle_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for n in itertools.count():
            if event.is_cancelled:
                stopped.set()
                yield CANCEL, None
                return
            match = Dataset()
            match.PatientName = f"DOE^{n:06d}"
            yield PENDING, match

    scp = AE(ae_title="PYFINDSCP")
    scp.add_supported_context(MWL, ILE)
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, handle_find)]
    )
    assert server is not None
    try:
        port = server.server_address[1]
        ae = ApplicationEntity("SCU", "1.2.3.5", "TEST_02", acse_timeout_s=5, dimse_timeout_s=10)
        ae.add_requested_context(MWL, [ILE])
        assoc = ae.associate("127.0.0.1", port, "PYFINDSCP")
        mwl = assoc.context_for(MWL)
        assert mwl is not None
        statuses = []
        for message in assoc.send_c_find(mwl, patient(0), time.monotonic() + 60):
            statuses.append(message.status)
            if len(statuses) == 3:
                assoc.cancel(mwl, assoc.message_id)
        assoc.release()
    finally:
        server.shutdown()
    assert statuses[-1] == CANCEL and set(statuses[:-1]) == {PENDING}
    assert stopped.is_set()


def test_a_request_before_the_final_response_aborts(endless: Any) -> None:
    """No asynchronous operations window is negotiated (PS3.7 D.3.3.3): a second request while
    a C-FIND is answered is a protocol error, and the acceptor aborts."""
    server, handler = endless
    ae = ApplicationEntity("SCU", "1.2.3.5", "TEST_02", acse_timeout_s=5, dimse_timeout_s=10)
    ae.add_requested_context(MWL, [ILE])
    ae.add_requested_context(VERIFICATION, [ILE])
    assoc = ae.associate("127.0.0.1", server.port, "FINDSCP")
    mwl, echo = assoc.context_for(MWL), assoc.context_for(VERIFICATION)
    assert mwl is not None and echo is not None
    responses = assoc.send_c_find(mwl, patient(0), time.monotonic() + 60)
    assert next(responses).status == PENDING
    assoc.send_message(echo, dimse.request(dimse.C_ECHO_RQ, 99, VERIFICATION))
    with pytest.raises(requestor.Aborted):
        for _ in responses:
            pass
    assert handler.closed.wait(10)


def test_a_handler_runs_to_its_end_after_its_final_response() -> None:
    """What a handler does after its final response (a Storage Commitment SCP's N-EVENT-REPORT
    after the N-ACTION-RSP, PS3.4 J.3.3) is not cut off: the generator is run to its end."""
    after = threading.Event()

    def one_match(
        assoc: AcceptorAssociation, context: Any, rq: dimse.Command, data: bytes | None
    ) -> Iterator[tuple[int, bytes | None]]:
        yield PENDING, patient(1)
        yield SUCCESS, None
        after.set()

    scp = ApplicationEntity("FINDSCP", "1.2.3.4", "TEST_01", acse_timeout_s=5, network_timeout_s=5)
    scp.add_supported_context(MWL, [ILE])
    server = scp.start_server(("127.0.0.1", 0), [(Evt.C_FIND, one_match)])
    try:
        scu = ApplicationEntity("SCU", "1.2.3.5", "TEST_02", acse_timeout_s=5, dimse_timeout_s=10)
        scu.add_requested_context(MWL, [ILE])
        assoc = scu.associate("127.0.0.1", server.port, "FINDSCP")
        try:
            mwl = assoc.context_for(MWL)
            assert mwl is not None
            statuses = [r.status for r in assoc.send_c_find(mwl, patient(0), time.monotonic() + 30)]
            assert statuses == [PENDING, SUCCESS]
            assert after.wait(10)
        finally:
            assoc.release()
    finally:
        server.shutdown()
