"""DIMSE command sets as bytes (PS3.7 E.1, 9.3, 10.3): group 0000, always Implicit VR Little Endian.

Encoding and bounded decoding of command sets; the command fields and statuses the product
uses. Pure functions; no sockets.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

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
#: Request command field → its response's (PS3.7 9.3, 10.3).
RESPONSE_OF = {
    C_STORE_RQ: C_STORE_RSP,
    C_FIND_RQ: C_FIND_RSP,
    C_ECHO_RQ: C_ECHO_RSP,
    N_EVENT_REPORT_RQ: N_EVENT_REPORT_RSP,
    N_SET_RQ: N_SET_RSP,
    N_ACTION_RQ: N_ACTION_RSP,
    N_CREATE_RQ: N_CREATE_RSP,
}

# Command elements (PS3.7 E.1), by element number in group 0000.
AFFECTED_SOP_CLASS_UID, REQUESTED_SOP_CLASS_UID = 0x0002, 0x0003
COMMAND_FIELD, MESSAGE_ID, MESSAGE_ID_BEING_RESPONDED_TO = 0x0100, 0x0110, 0x0120
PRIORITY, COMMAND_DATA_SET_TYPE, STATUS = 0x0700, 0x0800, 0x0900
AFFECTED_SOP_INSTANCE_UID, REQUESTED_SOP_INSTANCE_UID = 0x1000, 0x1001
EVENT_TYPE_ID, ACTION_TYPE_ID = 0x1002, 0x1008
ERROR_COMMENT = 0x0902
#: The request elements naming the SOP class and instance: N-SET and N-ACTION name the
#: *requested* ones (PS3.7 10.3.3, 10.3.4); every other message the *affected* ones.
_REQUESTED = frozenset({N_SET_RQ, N_ACTION_RQ})


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


# ------------------------------------------------------------------ messages


@dataclass(frozen=True)
class Command:
    """A decoded command set: the fields every message has, and all elements."""

    field: int
    message_id: int
    has_data_set: bool
    elements: dict[int, bytes]

    @property
    def sop_class_uid(self) -> str:
        return command_ui(self.elements, AFFECTED_SOP_CLASS_UID) or command_ui(
            self.elements, REQUESTED_SOP_CLASS_UID
        )

    @property
    def sop_instance_uid(self) -> str:
        return command_ui(self.elements, AFFECTED_SOP_INSTANCE_UID) or command_ui(
            self.elements, REQUESTED_SOP_INSTANCE_UID
        )

    @property
    def status(self) -> int | None:
        return command_us(self.elements, STATUS)

    @property
    def responded_to(self) -> int | None:
        """Message ID Being Responded To (0000,0120) of a response."""
        return command_us(self.elements, MESSAGE_ID_BEING_RESPONDED_TO)

    @property
    def is_response(self) -> bool:
        return bool(self.field & 0x8000)


def decode_command(data: bytes | bytearray) -> Command:
    """A command set decoded and checked: Command Field, Data Set Type, and a Message ID (a
    request's own, or the one a response answers) must be there (PS3.7 E.1)."""
    elements = parse_command(data)
    field = command_us(elements, COMMAND_FIELD)
    data_set_type = command_us(elements, COMMAND_DATA_SET_TYPE)
    if field is None or data_set_type is None:
        raise ProtocolError("command set lacks Command Field or Command Data Set Type")
    # A response, and a C-CANCEL-RQ (PS3.7 9.3.2.3), name the message they answer or cancel.
    answers = field & 0x8000 or field == C_CANCEL_RQ
    key = MESSAGE_ID_BEING_RESPONDED_TO if answers else MESSAGE_ID
    message_id = command_us(elements, key)
    if message_id is None:
        raise ProtocolError("command set lacks its Message ID")
    return Command(field, message_id, data_set_type != NO_DATA_SET, elements)


def request(
    command_field: int,
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str | None = None,
    *,
    has_data_set: bool = False,
    priority: int | None = None,
    type_id: int | None = None,
) -> bytes:
    """Any request command set (PS3.7 9.3 and 10.3): C-ECHO, C-STORE, C-FIND, C-CANCEL (its
    Message ID is the one it cancels, 9.3.2.3), N-EVENT-REPORT, N-SET, N-ACTION, N-CREATE.
    `type_id` is the Event Type ID of an N-EVENT-REPORT or the Action Type ID of an N-ACTION."""
    requested = command_field in _REQUESTED
    elements: list[tuple[int, bytes]] = []
    if command_field != C_CANCEL_RQ:
        key = REQUESTED_SOP_CLASS_UID if requested else AFFECTED_SOP_CLASS_UID
        elements.append((key, uid_value(sop_class_uid)))
    elements.append((COMMAND_FIELD, us(command_field)))
    id_key = MESSAGE_ID_BEING_RESPONDED_TO if command_field == C_CANCEL_RQ else MESSAGE_ID
    elements.append((id_key, us(message_id)))
    if priority is not None:
        elements.append((PRIORITY, us(priority)))
    elements.append((COMMAND_DATA_SET_TYPE, us(0x0000 if has_data_set else NO_DATA_SET)))
    if sop_instance_uid is not None:
        key = REQUESTED_SOP_INSTANCE_UID if requested else AFFECTED_SOP_INSTANCE_UID
        elements.append((key, uid_value(sop_instance_uid)))
    if type_id is not None:
        key = ACTION_TYPE_ID if command_field == N_ACTION_RQ else EVENT_TYPE_ID
        elements.append((key, us(type_id)))
    return command_set(sorted(elements))


def response_to(
    rq: Command,
    status: int,
    *,
    has_data_set: bool = False,
    sop_instance_uid: str | None = None,
) -> bytes:
    """The response command set answering `rq` (PS3.7 9.3, 10.3): affected SOP class and
    instance echoed (or the instance the SCP created, N-CREATE 10.3.5), Event or Action Type ID
    echoed for N-EVENT-REPORT and N-ACTION."""
    elements: list[tuple[int, bytes]] = [
        (AFFECTED_SOP_CLASS_UID, uid_value(rq.sop_class_uid)),
        (COMMAND_FIELD, us(RESPONSE_OF[rq.field])),
        (MESSAGE_ID_BEING_RESPONDED_TO, us(rq.message_id)),
        (COMMAND_DATA_SET_TYPE, us(0x0000 if has_data_set else NO_DATA_SET)),
        (STATUS, us(status)),
    ]
    instance = sop_instance_uid or rq.sop_instance_uid
    if instance and rq.field not in (C_FIND_RQ, C_ECHO_RQ):
        elements.append((AFFECTED_SOP_INSTANCE_UID, uid_value(instance)))
    for key in (EVENT_TYPE_ID, ACTION_TYPE_ID):
        if key in rq.elements:
            elements.append((key, rq.elements[key]))
    return command_set(sorted(elements))
