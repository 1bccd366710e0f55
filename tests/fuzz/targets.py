"""Fuzz targets: each decoder the station runs on bytes from a peer, and its documented error.

A target takes one input and either returns or raises the decoder's documented error type;
anything else is a defect. The decoders are imported here and nowhere else in tests/fuzz, so
that a decoder that moves is re-pointed in one line:

- associate_rq: the A-ASSOCIATE-RQ parser of cinebridge_dicom (PS3.8 9.3.2); error: ProtocolError.
- p_data: the SCP acceptor reading a whole association after a valid A-ASSOCIATE-RQ: P-DATA-TF
  and its PDVs (PS3.8 9.3.5), command fragments, C-STORE data sets into a file; error: none,
  every fault must end the association inside `Association.run()`.
- command_set: the DIMSE command-set decoder (PS3.7 6.3) and the field reads the SCP does on
  it; error: ProtocolError.
- dataset_walk: the walk the SCP runs over each received Part 10 file (PS3.5 7, PS3.10 7.1);
  error: MalformedDataset.
- worklist_json: the worklist's C-FIND identifier to DICOM JSON codec (PS3.18 F.2); error:
  MalformedEntry.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from cinebridge_dicom.dcmjson import MalformedEntry, decode_identifier
from cinebridge_dicom.dimse import command_ui, command_us, parse_command
from cinebridge_dicom.pdu import ProtocolError, parse_associate_rq
from cinebridge_scp.acceptor import AcceptorConfig, Association, Limits
from cinebridge_scp.ingest import TAGS, Command
from cinebridge_scp.listener import supported_syntaxes
from cinebridge_scp.receive import ReceiveConfig, ReceiveFile
from cinebridge_scp.walk import MalformedDataset, walk_file

#: The top-level values the SCP asks of each file: the walk collects these.
WANTED = set(TAGS.values())
#: Worklist transfer syntaxes (statement Table 15), chosen by the input's first byte.
WORKLIST_SYNTAXES = ((True, True), (False, True), (False, False))


def associate_rq(data: bytes) -> None:
    try:
        parse_associate_rq(data)
    except ProtocolError:
        pass


def command_set(data: bytes) -> None:
    try:
        elements = parse_command(data)
    except ProtocolError:
        return
    for element in (0x0100, 0x0110, 0x0800, 0x0700, 0x0900):
        command_us(elements, element)
    for element in (0x0002, 0x1000):
        command_ui(elements, element)


def dataset_walk(data: bytes) -> None:
    try:
        walk_file(io.BytesIO(data), len(data), WANTED)
    except MalformedDataset:
        pass


def worklist_json(data: bytes) -> None:
    implicit, little = WORKLIST_SYNTAXES[data[0] % 3] if data else (True, True)
    try:
        decode_identifier(data[1:], implicit=implicit, little=little, fallback_charset="")
    except MalformedEntry:
        pass


# ------------------------------------------------------------------ the acceptor on a socket pair

#: The A-ASSOCIATE-RQ every p_data input follows: Verification and CT, as storescu proposes.
CT = "1.2.840.10008.5.1.4.1.1.2"


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def valid_associate_rq(max_pdu: int = 16384) -> bytes:
    items = _item(0x10, b"1.2.840.10008.3.1.1.1")
    for cid, abstract, syntax in (
        (1, "1.2.840.10008.1.1", "1.2.840.10008.1.2"),
        (3, CT, "1.2.840.10008.1.2.1"),
        (5, CT, "1.2.840.10008.1.2"),
    ):
        body = bytes([cid, 0, 0, 0]) + _item(0x30, abstract.encode()) + _item(0x40, syntax.encode())
        items += _item(0x20, body)
    items += _item(0x50, _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, b"1.2.3.4"))
    head = struct.pack(">HH", 1, 0) + b"CINEBRIDGE".ljust(16) + b"FUZZSCU".ljust(16) + bytes(32)
    body = head + items
    return struct.pack(">BBL", 1, 0, len(body)) + body


class _DiscardingSink:
    """Ingest stand-in: the fuzzed bytes are not a study; answer success and keep nothing."""

    def store_instance(self, rf: ReceiveFile, command: Command) -> int:
        rf.discard()
        return 0x0110 if rf.error else 0x0000


class AcceptorTarget:
    """Runs one SCP association per input over a socket pair, in this thread."""

    def __init__(self, temp_dir: Path) -> None:
        logging.getLogger("cinebridge_scp").setLevel(logging.CRITICAL)
        temp_dir.mkdir(parents=True, exist_ok=True)
        self.config = AcceptorConfig(
            ae_title="CINEBRIDGE",
            require_called_ae=False,
            allowed_calling_ae_titles=frozenset(),
            supported=supported_syntaxes(),
            limits=Limits(
                max_pdu=1 << 20,
                acse_timeout_s=5.0,
                network_timeout_s=5.0,
                pdu_timeout_s=5.0,
                max_pending=4,
                max_associations=4,
                dimse_timeout_s=5.0,
            ),
            implementation_class_uid="1.2.826.0.1.3680043.10.1452",
            implementation_version_name="FUZZ",
            receive=ReceiveConfig(temp_dir, 1 << 20),
            ingest=_DiscardingSink(),
        )
        self.prefix = valid_associate_rq()

    def __call__(self, data: bytes) -> None:
        ours, theirs = socket.socketpair()
        # The peer writes the input and closes its side, and reads whatever the acceptor answers
        # (as a peer does): an acceptor that answers each bad PDU of a long input with an
        # A-ABORT (AA-7 in Sta13) must not wait out a full socket buffer.
        peer = threading.Thread(target=_peer, args=(theirs, self.prefix[6:] + data), daemon=True)
        peer.start()
        try:
            assoc = Association(ours, "fuzz", self.config, self.prefix[:6], lambda: True)
            assoc.run()  # every fault must end inside run(): nothing may escape
        finally:
            ours.close()
            peer.join(10)
            theirs.close()


def _peer(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(1 << 16):
            pass


def p_data_target() -> Callable[[bytes], None]:
    return AcceptorTarget(Path(tempfile.mkdtemp(prefix="cinebridge-fuzz-")))


#: name → a factory of the target callable (the acceptor needs a temp directory).
TARGETS: dict[str, Callable[[], Callable[[bytes], None]]] = {
    "associate_rq": lambda: associate_rq,
    "p_data": p_data_target,
    "command_set": lambda: command_set,
    "dataset_walk": lambda: dataset_walk,
    "worklist_json": lambda: worklist_json,
}
