"""Acceptor-side DICOM Upper Layer PDUs and DIMSE command sets (PS3.8 9.3, PS3.7 E.1).

Pure functions over bytes: parsing what a peer sends (bounded, every length checked against what
is really there) and building what we answer. `PduError` carries the A-ABORT reason to send
(PS3.8 Table 9-26: 1 unrecognised PDU, 2 unexpected PDU, 4 unrecognised PDU parameter,
5 unexpected PDU parameter, 6 invalid PDU parameter value).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# PDU types (PS3.8 Table 9-11).
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07

# A-ABORT reasons (PS3.8 Table 9-26, source 2: service provider).
UNRECOGNISED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 1, 2, 6

# DIMSE command fields (PS3.7 Table E.1-1).
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATA_SET = 0x0101

# Presentation context results (PS3.8 Table 9-18).
ACCEPTANCE, USER_REJECTION, ABSTRACT_NOT_SUPPORTED, TRANSFER_NOT_SUPPORTED = 0, 1, 3, 4


class PduError(Exception):
    """A protocol error: the association is aborted with `reason` (source 2)."""

    def __init__(self, message: str, reason: int = INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ProposedContext:
    id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class AssociateRq:
    """What an A-ASSOCIATE-RQ says (PS3.8 9.3.2), decoded and checked."""

    protocol_version: int
    called_ae: str
    calling_ae: str
    application_context: str
    contexts: tuple[ProposedContext, ...]
    #: Requestor's Maximum Length Received (0 = no limit, PS3.8 D.1).
    max_pdu: int
    implementation_class_uid: str
    implementation_version_name: str
    #: SCP/SCU Role Selection (PS3.7 D.3.3.4): abstract syntax → (SCU role, SCP role).
    roles: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ContextResult:
    id: int
    result: int
    transfer_syntax: str
    abstract_syntax: str


def _items(data: bytes | memoryview, where: str) -> Iterator[tuple[int, bytes]]:
    """Variable items (type, reserved, 16-bit length, value); a length that lies is an error."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise PduError(f"truncated item header in {where}")
        kind, _, length = struct.unpack_from(">BBH", view, pos)
        if pos + 4 + length > len(view):
            raise PduError(f"item 0x{kind:02X} in {where} is longer than its container")
        yield kind, bytes(view[pos + 4 : pos + 4 + length])
        pos += 4 + length


def _text(value: bytes, where: str) -> str:
    """An ASCII UID or name; NUL/space padding removed, anything else refused."""
    stripped = value.rstrip(b"\x00 ")
    if not stripped.isascii() or any(b < 0x20 for b in stripped):
        raise PduError(f"{where} is not printable ASCII")
    return stripped.decode("ascii")


def _ae_title(value: bytes) -> str:
    """AE titles are 16 bytes, space padded (PS3.8 9.3.2); leading spaces are not significant."""
    return _text(value, "AE title").strip()


def parse_associate_rq(body: bytes) -> AssociateRq:
    """Decode the body (after the 6-byte PDU header) of an A-ASSOCIATE-RQ."""
    if len(body) < 68:
        raise PduError("A-ASSOCIATE-RQ shorter than its fixed fields")
    (version,) = struct.unpack_from(">H", body, 0)
    called, calling = _ae_title(body[4:20]), _ae_title(body[20:36])
    app_context = ""
    contexts: list[ProposedContext] = []
    seen_ids: set[int] = set()
    max_pdu = 0
    impl_uid = impl_version = ""
    roles: dict[str, tuple[int, int]] = {}
    user_info = False
    for kind, value in _items(body[68:], "A-ASSOCIATE-RQ"):
        if kind == 0x10:
            app_context = _text(value, "application context name")
        elif kind == 0x20:
            if len(value) < 4:
                raise PduError("presentation context item too short")
            cid = value[0]
            if cid % 2 == 0 or cid in seen_ids:  # PS3.8 9.3.2.2: odd and unique
                raise PduError(f"presentation context id {cid} is even or repeated")
            seen_ids.add(cid)
            abstract = ""
            syntaxes: list[str] = []
            for sub, sub_value in _items(value[4:], "presentation context"):
                if sub == 0x30:
                    abstract = _text(sub_value, "abstract syntax")
                elif sub == 0x40:
                    syntaxes.append(_text(sub_value, "transfer syntax"))
                else:
                    raise PduError(f"unexpected sub-item 0x{sub:02X} in a presentation context")
            if not abstract or not syntaxes:
                raise PduError(f"presentation context {cid} lacks its syntaxes")
            contexts.append(ProposedContext(cid, abstract, tuple(syntaxes)))
        elif kind == 0x50:
            user_info = True
            for sub, sub_value in _items(value, "user information"):
                if sub == 0x51:
                    if len(sub_value) != 4:
                        raise PduError("maximum length sub-item is not 4 bytes")
                    (max_pdu,) = struct.unpack(">I", sub_value)
                elif sub == 0x52:
                    impl_uid = _text(sub_value, "implementation class UID")
                elif sub == 0x55:
                    impl_version = _text(sub_value, "implementation version name")
                elif sub == 0x54 and len(sub_value) >= 4:
                    (uid_length,) = struct.unpack_from(">H", sub_value, 0)
                    if 2 + uid_length + 2 != len(sub_value):
                        raise PduError("role selection sub-item length lies")
                    uid = _text(sub_value[2 : 2 + uid_length], "role selection UID")
                    roles[uid] = (sub_value[2 + uid_length], sub_value[3 + uid_length])
                # 0x53 asynchronous operations, 0x56/0x57 extended negotiation, 0x58 user
                # identity: not supported; leaving them out of the A-ASSOCIATE-AC declines them.
        else:
            raise PduError(f"unexpected item 0x{kind:02X} in A-ASSOCIATE-RQ", reason=4)
    if not app_context:
        raise PduError("A-ASSOCIATE-RQ has no application context")
    if not contexts:
        raise PduError("A-ASSOCIATE-RQ proposes no presentation context")
    if not user_info:
        raise PduError("A-ASSOCIATE-RQ has no user information item")
    return AssociateRq(
        version, called, calling, app_context, tuple(contexts), max_pdu, impl_uid, impl_version,
        roles,
    )  # fmt: skip


def negotiate(
    rq: AssociateRq, supported: dict[str, frozenset[str]]
) -> tuple[list[ContextResult], dict[str, tuple[int, int]]]:
    """Per proposed context, the first transfer syntax *in the requestor's order* that we
    support, so an instance is stored as sent (PS3.8 9.3.3.2). Our role is SCP only: a context
    whose requestor declines the SCU role is refused (PS3.7 D.3.3.4). Also the role replies."""
    results: list[ContextResult] = []
    role_replies: dict[str, tuple[int, int]] = {}
    for cx in rq.contexts:
        ours = supported.get(cx.abstract_syntax)
        first = cx.transfer_syntaxes[0]
        if ours is None:
            results.append(ContextResult(cx.id, ABSTRACT_NOT_SUPPORTED, first, cx.abstract_syntax))
            continue
        chosen = next((ts for ts in cx.transfer_syntaxes if ts in ours), None)
        if chosen is None:
            results.append(ContextResult(cx.id, TRANSFER_NOT_SUPPORTED, first, cx.abstract_syntax))
            continue
        role = rq.roles.get(cx.abstract_syntax)
        if role is not None:
            role_replies[cx.abstract_syntax] = (role[0], 0)
            if not role[0]:
                results.append(ContextResult(cx.id, USER_REJECTION, chosen, cx.abstract_syntax))
                continue
        results.append(ContextResult(cx.id, ACCEPTANCE, chosen, cx.abstract_syntax))
    return results, role_replies


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii")[:16].ljust(16, b" ")


def associate_ac(
    rq: AssociateRq,
    results: list[ContextResult],
    roles: dict[str, tuple[int, int]],
    max_pdu: int,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """A-ASSOCIATE-AC (PS3.8 9.3.3): called/calling AE echoed as received, one item per context."""
    body = struct.pack(">HH", 1, 0) + _ae(rq.called_ae) + _ae(rq.calling_ae) + bytes(32)
    body += _item(0x10, APPLICATION_CONTEXT.encode("ascii"))
    for r in results:
        body += _item(
            0x21, struct.pack(">BBBB", r.id, 0, r.result, 0) + _item(0x40, _uid(r.transfer_syntax))
        )
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, _uid(implementation_class_uid))
    for uid, (scu, scp) in sorted(roles.items()):
        raw = uid.encode("ascii")
        user += _item(0x54, struct.pack(">H", len(raw)) + raw + bytes([scu, scp]))
    user += _item(0x55, implementation_version_name.encode("ascii")[:16])
    body += _item(0x50, user)
    return struct.pack(">BBI", ASSOCIATE_AC, 0, len(body)) + body  # fmt: skip


def _uid(value: str) -> bytes:
    return value.encode("ascii")


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4)."""
    return struct.pack(">BBLBBBB", ASSOCIATE_RJ, 0, 4, 0, result, source, reason)


def a_abort(reason: int, source: int = 2) -> bytes:
    """A-ABORT (PS3.8 9.3.8); source 2 = service provider, 0 = service user (reason 0)."""
    return struct.pack(">BBLBBBB", ABORT, 0, 4, 0, 0, source, reason if source == 2 else 0)


RELEASE_RP_PDU = struct.pack(">BBLL", RELEASE_RP, 0, 4, 0)


# ------------------------------------------------------------------ DIMSE command sets (E.1)


def parse_command(data: bytes | bytearray) -> dict[int, bytes]:
    """Implicit VR LE group 0000 elements by element number; anything malformed is an error."""
    elements: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            raise PduError("command set truncated in an element header")
        group, element, length = struct.unpack_from("<HHI", data, pos)
        if group != 0:
            raise PduError(f"command set holds a group {group:04X} element")
        if pos + 8 + length > end:
            raise PduError(f"command element (0000,{element:04X}) longer than the command set")
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


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, element, len(value)) + value


def _ui(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b"\0" if len(raw) % 2 else raw


def response(
    command_field: int,
    message_id: int,
    status: int,
    sop_class_uid: str,
    sop_instance_uid: str | None = None,
) -> bytes:
    """A C-STORE-RSP or C-ECHO-RSP command set (PS3.7 9.3.1.2, 9.3.5.2), no data set."""
    rest = (
        _element(0x0002, _ui(sop_class_uid))
        + _element(0x0100, struct.pack("<H", command_field))
        + _element(0x0120, struct.pack("<H", message_id))
        + _element(0x0800, struct.pack("<H", NO_DATA_SET))
        + _element(0x0900, struct.pack("<H", status))
    )
    if sop_instance_uid is not None:
        rest += _element(0x1000, _ui(sop_instance_uid))
    return _element(0x0000, struct.pack("<I", len(rest))) + rest


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    """A P-DATA-TF PDU holding one PDV (PS3.8 9.3.5)."""
    n = len(data)
    return struct.pack(">BBIIBB", P_DATA_TF, 0, n + 6, n + 2, context_id, control) + data
