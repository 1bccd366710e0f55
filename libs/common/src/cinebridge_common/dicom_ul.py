"""DICOM Upper Layer PDUs and DIMSE command sets as bytes (PS3.8 9.3, PS3.7 E.1), shared.

The station speaks DICOM through three lean state machines of its own, each sized to its job:
the SCP's acceptor (C-STORE and C-ECHO in), the sender's requestor (C-STORE out) and the
worklist's requestor (C-FIND, C-ECHO). They share the encodings here: items and their bounded
parsing, A-ASSOCIATE-RQ/AC/RJ, A-ABORT, A-RELEASE, P-DATA-TF, and command sets (group 0000,
always Implicit VR Little Endian). Pure functions; no sockets.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

#: PS3.7 A.2.1: the DICOM Application Context Name.
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# PDU types (PS3.8 Table 9-11).
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07

# A-ABORT reasons when the source is the service provider (PS3.8 Table 9-26).
UNRECOGNISED_PDU, UNEXPECTED_PDU, UNRECOGNISED_PARAMETER, INVALID_PARAMETER = 1, 2, 4, 6

# DIMSE (PS3.7 E.1): Command Data Set Type "no data set", and the command fields we use.
NO_DATA_SET = 0x0101
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_FIND_RQ, C_FIND_RSP, C_CANCEL_RQ = 0x0020, 0x8020, 0x0FFF
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030

#: A-ASSOCIATE-RJ (source, reason) → words for an operator (PS3.8 Table 9-21).
REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}

RELEASE_RQ_PDU = struct.pack(">BBLL", RELEASE_RQ, 0, 4, 0)
RELEASE_RP_PDU = struct.pack(">BBLL", RELEASE_RP, 0, 4, 0)


class ProtocolError(ValueError):
    """Bytes that break PS3.8/PS3.7; `reason` is the A-ABORT reason to send (source 2)."""

    def __init__(self, message: str, reason: int = INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------ items and fields


def item(kind: int, body: bytes) -> bytes:
    """A variable item: type, reserved, 16-bit length, value (PS3.8 9.3.2.x)."""
    return struct.pack(">BBH", kind, 0, len(body)) + body


def items(data: bytes | memoryview, where: str) -> Iterator[tuple[int, bytes]]:
    """The items of `data`; an item whose length runs past its container is an error."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise ProtocolError(f"truncated item header in {where}")
        kind, _, length = struct.unpack_from(">BBH", view, pos)
        if pos + 4 + length > len(view):
            raise ProtocolError(f"item 0x{kind:02X} in {where} is longer than its container")
        yield kind, bytes(view[pos + 4 : pos + 4 + length])
        pos += 4 + length


def text(value: bytes, where: str) -> str:
    """An ASCII UID or name from the wire, padding removed; anything else is an error."""
    stripped = value.rstrip(b"\x00 ")
    if not stripped.isascii() or any(b < 0x20 for b in stripped):
        raise ProtocolError(f"{where} is not printable ASCII")
    return stripped.decode("ascii")


def ae_field(title: str) -> bytes:
    """An AE title field: 16 bytes, space padded (PS3.8 9.3.2; PS3.5 AE repertoire)."""
    raw = title.strip().encode("ascii", "replace")
    if not raw or len(raw) > 16 or any(b < 0x20 or b in (0x5C, 0x7F) for b in raw) or b"?" in raw:
        raise ValueError(f"invalid AE title {title!r}")
    return raw.ljust(16)


def ae_title(value: bytes) -> str:
    """An AE title field as received; leading and trailing spaces are not significant."""
    return text(value, "AE title").strip()


def uid_value(uid: str) -> bytes:
    """A UI value, padded to even length with NUL (PS3.5 6.2)."""
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


# ------------------------------------------------------------------ association


def associate_rq(
    called_ae: str,
    calling_ae: str,
    contexts: Iterable[tuple[int, str, Iterable[str]]],
    max_pdu: int,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing (id, abstract syntax, transfer syntaxes)."""
    body = struct.pack(">HH", 1, 0) + ae_field(called_ae) + ae_field(calling_ae) + bytes(32)
    body += item(0x10, APPLICATION_CONTEXT.encode("ascii"))
    for cid, abstract, syntaxes in contexts:
        sub = item(0x30, abstract.encode("ascii"))
        sub += b"".join(item(0x40, ts.encode("ascii")) for ts in syntaxes)
        body += item(0x20, struct.pack(">BBBB", cid, 0, 0, 0) + sub)
    user = item(0x51, struct.pack(">I", max_pdu))
    user += item(0x52, implementation_class_uid.encode("ascii"))
    user += item(0x55, implementation_version_name.encode("ascii")[:16])
    body += item(0x50, user)
    return struct.pack(">BBI", ASSOCIATE_RQ, 0, len(body)) + body


@dataclass(frozen=True)
class AssociateAc:
    """What an A-ASSOCIATE-AC says (PS3.8 9.3.3)."""

    #: Presentation context id → (result, transfer syntax); result 0 is acceptance.
    contexts: dict[int, tuple[int, str]] = field(default_factory=dict)
    #: The acceptor's Maximum Length Received (0 = no limit, PS3.8 D.1).
    max_pdu: int = 0

    def accepted(self, context_id: int) -> str | None:
        result = self.contexts.get(context_id)
        return result[1] if result is not None and result[0] == 0 else None


def parse_associate_ac(body: bytes) -> AssociateAc:
    """Decode the body (after the 6-byte PDU header) of an A-ASSOCIATE-AC."""
    if len(body) < 68:
        raise ProtocolError("A-ASSOCIATE-AC shorter than its fixed fields")
    contexts: dict[int, tuple[int, str]] = {}
    max_pdu = 0
    for kind, value in items(body[68:], "A-ASSOCIATE-AC"):
        if kind == 0x21 and len(value) >= 4:
            syntaxes = [v for k, v in items(value[4:], "presentation context") if k == 0x40]
            syntax = text(syntaxes[0], "transfer syntax") if syntaxes else ""
            contexts[value[0]] = (value[2], syntax)
        elif kind == 0x50:
            for sub, sub_value in items(value, "user information"):
                if sub == 0x51 and len(sub_value) == 4:
                    (max_pdu,) = struct.unpack(">I", sub_value)
    return AssociateAc(contexts, max_pdu)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4)."""
    return struct.pack(">BBLBBBB", ASSOCIATE_RJ, 0, 4, 0, result, source, reason)


def rejection(body: bytes) -> tuple[bool, str]:
    """(permanent?, why) of an A-ASSOCIATE-RJ body."""
    if len(body) < 4:
        return True, "malformed A-ASSOCIATE-RJ"
    result, source, reason = body[1], body[2], body[3]
    why = REJECT_REASONS.get((source, reason), f"source {source}, reason {reason}")
    return result == 1, why


def a_abort(reason: int = 0, source: int = 0) -> bytes:
    """A-ABORT (PS3.8 9.3.8): source 0 = service user (reason 0), 2 = service provider."""
    return struct.pack(">BBLBBBB", ABORT, 0, 4, 0, 0, source, reason if source == 2 else 0)


# ------------------------------------------------------------------ data transfer


def p_data_header(context_id: int, control: int, size: int) -> bytes:
    """The 12 bytes before a PDV's data: P-DATA-TF header and PDV header (PS3.8 9.3.5).
    `control`: bit 0 command (else data set), bit 1 last fragment."""
    return struct.pack(">BBIIBB", P_DATA_TF, 0, size + 6, size + 2, context_id, control)


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    """A P-DATA-TF PDU holding one PDV."""
    return p_data_header(context_id, control, len(data)) + data


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def command_set(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """A command set from (element, value bytes), group 0000, with its group length."""
    body = b"".join(struct.pack("<HHI", 0, element, len(v)) + v for element, v in elements)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def parse_command(data: bytes | bytearray) -> dict[int, bytes]:
    """Element → value bytes of a command set; anything malformed is a ProtocolError."""
    elements: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            raise ProtocolError("command set truncated in an element header")
        group, element, length = struct.unpack_from("<HHI", data, pos)
        if group != 0:
            raise ProtocolError(f"command set holds a group {group:04X} element")
        if pos + 8 + length > end:
            raise ProtocolError(f"command element (0000,{element:04X}) runs past the command set")
        elements[element] = bytes(data[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return elements


def command_us(elements: dict[int, bytes], element: int) -> int | None:
    value = elements.get(element)
    return struct.unpack("<H", value)[0] if value is not None and len(value) == 2 else None


def command_ui(elements: dict[int, bytes], element: int) -> str:
    value = elements.get(element, b"")
    try:
        return value.rstrip(b"\x00 ").decode("ascii")
    except UnicodeDecodeError:
        return ""
