"""DIMSE command sets as bytes (PS3.7 E.1, 9.3, 10.3): group 0000, always Implicit VR Little Endian.

Encoding and bounded decoding of command sets; the command fields and statuses the product
uses. Pure functions; no sockets.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from .pdu import ProtocolError, uid_value

# PS3.7 E.1: Command Data Set Type "no data set" (any other value: a data set follows).
NO_DATA_SET = 0x0101
# Command Field values (PS3.7 E.1, Table E.1-1 and 10.3).
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_FIND_RQ, C_FIND_RSP, C_CANCEL_RQ = 0x0020, 0x8020, 0x0FFF
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
N_EVENT_REPORT_RQ, N_EVENT_REPORT_RSP = 0x0100, 0x8100
N_SET_RQ, N_SET_RSP = 0x0120, 0x8120
N_ACTION_RQ, N_ACTION_RSP = 0x0130, 0x8130
N_CREATE_RQ, N_CREATE_RSP = 0x0140, 0x8140


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


def response(
    command_field: int,
    message_id: int,
    status: int,
    sop_class_uid: str,
    sop_instance_uid: str | None = None,
) -> bytes:
    """A C-STORE-RSP or C-ECHO-RSP command set (PS3.7 9.3.1.2, 9.3.5.2), no data set."""
    elements = [
        (0x0002, uid_value(sop_class_uid)),
        (0x0100, us(command_field)),
        (0x0120, us(message_id)),
        (0x0800, us(NO_DATA_SET)),
        (0x0900, us(status)),
    ]
    if sop_instance_uid is not None:
        elements.append((0x1000, uid_value(sop_instance_uid)))
    return command_set(elements)
