"""The lean Upper Layer client's encodings, checked by independent decoders (pynetdicom, pydicom),
and its refusal of hostile peers."""

from __future__ import annotations

import socket
import struct
import threading
from io import BytesIO

import pytest
from cinebridge_sender import ul
from pydicom.filereader import read_dataset
from pynetdicom.pdu import A_ASSOCIATE_RQ


def test_associate_rq_decodes_with_pynetdicom() -> None:
    raw = ul.associate_rq(
        "PACS",
        "SPACS",
        [
            (1, "1.2.840.10008.5.1.4.1.1.7", ["1.2.840.10008.1.2.4.50"]),
            (3, "1.2.840.10008.5.1.4.1.1.7", ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2"]),
        ],
        "1.2.3.4",
        "CB_TEST",
    )
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(raw)
    assert pdu.called_ae_title == "PACS"
    assert pdu.calling_ae_title == "SPACS"
    assert pdu.application_context_name == ul.APPLICATION_CONTEXT
    contexts = {cx.context_id: cx for cx in pdu.presentation_context}
    assert contexts[3].transfer_syntax == ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2"]
    user = pdu.user_information
    assert user.maximum_length == ul.OUR_MAX_PDU
    assert user.implementation_class_uid == "1.2.3.4"


def test_c_store_rq_is_a_valid_implicit_le_command_set() -> None:
    raw = ul.c_store_rq(7, "1.2.840.10008.5.1.4.1.1.7", "1.2.3.45")
    ds = read_dataset(BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandField == 0x0001
    assert ds.MessageID == 7
    assert ds.AffectedSOPInstanceUID == "1.2.3.45"
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.CommandDataSetType != 0x0101


def test_response_status_reads_the_status() -> None:
    body = (
        struct.pack("<HHI", 0, 0x0100, 2)
        + struct.pack("<H", 0x8001)
        + struct.pack("<HHI", 0, 0x0900, 2)
        + struct.pack("<H", 0xB007)
    )
    assert ul.response_status(body) == (0x8001, 0xB007)


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


def _open(port: int) -> ul.StoreAssociation:
    return ul.StoreAssociation.open(
        "127.0.0.1",
        port,
        "PACS",
        "SPACS",
        [("1.2.840.10008.5.1.4.1.1.7", ["1.2.840.10008.1.2"])],
        connect_s=2,
        acse_s=2,
        network_s=2,
        dimse_s=2,
        tls=None,
        impl_uid="1.2.3",
        impl_version="T",
    )


def test_hostile_pdu_length_is_refused() -> None:
    port = _one_shot_server(struct.pack(">BBI", 0x02, 0, 0x7FFFFFFF))
    with pytest.raises(ul.UlError, match="refused"):
        _open(port)


def test_rejection_reason_and_kind() -> None:
    port = _one_shot_server(struct.pack(">BBIBBBB", 0x03, 0, 4, 0, 1, 1, 7))
    with pytest.raises(ul.UlError) as info:
        _open(port)
    assert not info.value.transient
    assert "called AE title not recognised" in info.value.reason
