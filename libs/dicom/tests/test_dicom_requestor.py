"""The requestor: its encodings checked by independent decoders (pynetdicom, pydicom), its
refusal of hostile peers, and DIMSE against pynetdicom's SCP (the reference peer)."""

from __future__ import annotations

import socket
import struct
import threading
from io import BytesIO

import pytest
from cinebridge_dicom import dimse, pdu, requestor
from pydicom.filereader import read_dataset
from pynetdicom.pdu import A_ASSOCIATE_RQ


def test_associate_rq_decodes_with_pynetdicom() -> None:
    raw = pdu.associate_rq(
        "PACS",
        "SPACS",
        [
            (1, "1.2.840.10008.5.1.4.1.1.7", ["1.2.840.10008.1.2.4.50"]),
            (3, "1.2.840.10008.5.1.4.1.1.7", ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2"]),
        ],
        65536,
        "1.2.3.4",
        "CB_TEST",
    )
    rq = A_ASSOCIATE_RQ()
    rq.decode(raw)
    assert rq.called_ae_title == "PACS"
    assert rq.calling_ae_title == "SPACS"
    assert rq.application_context_name == pdu.APPLICATION_CONTEXT
    contexts = {cx.context_id: cx for cx in rq.presentation_context}
    assert contexts[3].transfer_syntax == ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2"]
    user = rq.user_information
    assert user.maximum_length == 65536
    assert user.implementation_class_uid == "1.2.3.4"


def test_c_store_rq_is_a_valid_implicit_le_command_set() -> None:
    raw = dimse.request(
        dimse.C_STORE_RQ, 7, "1.2.840.10008.5.1.4.1.1.7", "1.2.3.45", has_data_set=True, priority=0
    )
    ds = read_dataset(BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandField == 0x0001
    assert ds.MessageID == 7
    assert ds.AffectedSOPInstanceUID == "1.2.3.45"
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.CommandDataSetType != 0x0101


def test_decode_command_reads_a_response() -> None:
    body = (
        struct.pack("<HHI", 0, 0x0100, 2)
        + struct.pack("<H", 0x8001)
        + struct.pack("<HHI", 0, 0x0120, 2)
        + struct.pack("<H", 7)
        + struct.pack("<HHI", 0, 0x0800, 2)
        + struct.pack("<H", 0x0101)
        + struct.pack("<HHI", 0, 0x0900, 2)
        + struct.pack("<H", 0xB007)
    )
    command = dimse.decode_command(body)
    assert (command.field, command.message_id, command.status) == (0x8001, 7, 0xB007)
    assert command.is_response and not command.has_data_set


def _one_shot_server(reply: bytes) -> int:
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(reply)
            conn.recv(65536)
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return port


SETTINGS = requestor.Settings(
    calling_ae="SPACS",
    called_ae="PACS",
    implementation_class_uid="1.2.3",
    implementation_version_name="T",
    connect_s=2,
    acse_s=2,
    network_s=2,
    dimse_s=2,
)


def _open(port: int) -> requestor.Association:
    return requestor.Association.request(
        "127.0.0.1", port, SETTINGS, [("1.2.840.10008.5.1.4.1.1.7", ["1.2.840.10008.1.2"])]
    )


def test_hostile_pdu_length_is_refused() -> None:
    port = _one_shot_server(struct.pack(">BBI", 0x02, 0, 0x7FFFFFFF))
    with pytest.raises(requestor.AssociationError, match="limit"):
        _open(port)


def test_rejection_reason_and_kind() -> None:
    port = _one_shot_server(struct.pack(">BBIBBBB", 0x03, 0, 4, 0, 1, 1, 7))
    with pytest.raises(requestor.Rejected) as info:
        _open(port)
    assert not info.value.transient
    assert "called AE title not recognised" in info.value.reason


def test_a_refused_connection_is_said_in_words_an_operator_can_act_on() -> None:
    with socket.socket() as probe:  # a port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(requestor.AssociationError) as info:
        _open(port)
    assert info.value.transient
    assert info.value.reason == (
        f"cannot connect to PACS@127.0.0.1:{port}: connection refused: nothing listens on that"
        " port (is the peer running, the port right?) [Errno 111]"
    )


def test_a_connection_reset_mid_association_is_named() -> None:
    # The peer takes the connection and resets it (SO_LINGER 0) instead of answering.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def reset() -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

        threading.Thread(target=reset, daemon=True).start()
        with pytest.raises(requestor.AssociationError) as info:
            _open(port)
    assert "connection reset by the peer [Errno 104]" in info.value.reason
