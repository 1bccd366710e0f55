"""Upper Layer PDUs as bytes (PS3.8 9.3): the one codec of the product's DICOM networking.

Items and their bounded parsing, A-ASSOCIATE-RQ/AC/RJ, A-ABORT, A-RELEASE and P-DATA-TF in both
directions. Every length a peer announces is checked against what is really there before it is
used. `ProtocolError` carries the A-ABORT reason to send (PS3.8 Table 9-26: 1 unrecognised PDU,
2 unexpected PDU, 4 unrecognised PDU parameter, 6 invalid PDU parameter value). Pure functions;
no sockets.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

#: PS3.7 A.2.1: the DICOM Application Context Name.
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# PDU types (PS3.8 Table 9-11).
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07

# A-ABORT reasons when the source is the service provider (PS3.8 Table 9-26).
UNRECOGNISED_PDU, UNEXPECTED_PDU, UNRECOGNISED_PARAMETER, INVALID_PARAMETER = 1, 2, 4, 6

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
    roles: Mapping[str, tuple[int, int]] | None = None,
) -> bytes:
    """A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing (id, abstract syntax, transfer syntaxes), with an
    SCP/SCU Role Selection item (PS3.7 D.3.3.4) per abstract syntax in `roles`."""
    body = struct.pack(">HH", 1, 0) + ae_field(called_ae) + ae_field(calling_ae) + bytes(32)
    body += item(0x10, APPLICATION_CONTEXT.encode("ascii"))
    for cid, abstract, syntaxes in contexts:
        sub = item(0x30, abstract.encode("ascii"))
        sub += b"".join(item(0x40, ts.encode("ascii")) for ts in syntaxes)
        body += item(0x20, struct.pack(">BBBB", cid, 0, 0, 0) + sub)
    user = item(0x51, struct.pack(">I", max_pdu))
    user += item(0x52, implementation_class_uid.encode("ascii"))
    for uid, (scu, scp) in sorted((roles or {}).items()):
        raw = uid.encode("ascii")
        user += item(0x54, struct.pack(">H", len(raw)) + raw + bytes([scu, scp]))
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


def p_data_gathered(
    context_id: int, control: int, data: bytes | memoryview
) -> list[bytes | memoryview]:
    """A P-DATA-TF PDU holding one PDV as two buffers to send gathered: its headers, then the
    data as it is (not copied)."""
    return [p_data_header(context_id, control, len(data)), data]


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    """A P-DATA-TF PDU holding one PDV."""
    return p_data_header(context_id, control, len(data)) + data


# ------------------------------------------------------------------ acceptor side

# Presentation context results (PS3.8 Table 9-18).
ACCEPTANCE, USER_REJECTION, ABSTRACT_NOT_SUPPORTED, TRANSFER_NOT_SUPPORTED = 0, 1, 3, 4


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


def parse_associate_rq(body: bytes) -> AssociateRq:
    """Decode the body (after the 6-byte PDU header) of an A-ASSOCIATE-RQ."""
    if len(body) < 68:
        raise ProtocolError("A-ASSOCIATE-RQ shorter than its fixed fields")
    (version,) = struct.unpack_from(">H", body, 0)
    called, calling = ae_title(body[4:20]), ae_title(body[20:36])
    app_context = ""
    contexts: list[ProposedContext] = []
    seen_ids: set[int] = set()
    max_pdu = 0
    impl_uid = impl_version = ""
    roles: dict[str, tuple[int, int]] = {}
    user_info = False
    for kind, value in items(body[68:], "A-ASSOCIATE-RQ"):
        if kind == 0x10:
            app_context = text(value, "application context name")
        elif kind == 0x20:
            if len(value) < 4:
                raise ProtocolError("presentation context item too short")
            cid = value[0]
            if cid % 2 == 0 or cid in seen_ids:  # PS3.8 9.3.2.2: odd and unique
                raise ProtocolError(f"presentation context id {cid} is even or repeated")
            seen_ids.add(cid)
            abstract = ""
            syntaxes: list[str] = []
            for sub, sub_value in items(value[4:], "presentation context"):
                if sub == 0x30:
                    abstract = text(sub_value, "abstract syntax")
                elif sub == 0x40:
                    syntaxes.append(text(sub_value, "transfer syntax"))
                else:
                    raise ProtocolError(
                        f"unexpected sub-item 0x{sub:02X} in a presentation context"
                    )
            if not abstract or not syntaxes:
                raise ProtocolError(f"presentation context {cid} lacks its syntaxes")
            contexts.append(ProposedContext(cid, abstract, tuple(syntaxes)))
        elif kind == 0x50:
            user_info = True
            for sub, sub_value in items(value, "user information"):
                if sub == 0x51:
                    if len(sub_value) != 4:
                        raise ProtocolError("maximum length sub-item is not 4 bytes")
                    (max_pdu,) = struct.unpack(">I", sub_value)
                elif sub == 0x52:
                    impl_uid = text(sub_value, "implementation class UID")
                elif sub == 0x55:
                    impl_version = text(sub_value, "implementation version name")
                elif sub == 0x54 and len(sub_value) >= 4:
                    (uid_length,) = struct.unpack_from(">H", sub_value, 0)
                    if 2 + uid_length + 2 != len(sub_value):
                        raise ProtocolError("role selection sub-item length lies")
                    uid = text(sub_value[2 : 2 + uid_length], "role selection UID")
                    roles[uid] = (sub_value[2 + uid_length], sub_value[3 + uid_length])
                # 0x53 asynchronous operations, 0x56/0x57 extended negotiation, 0x58 user
                # identity: not supported; leaving them out of the A-ASSOCIATE-AC declines them.
        else:
            raise ProtocolError(
                f"unexpected item 0x{kind:02X} in A-ASSOCIATE-RQ", UNRECOGNISED_PARAMETER
            )
    if not app_context:
        raise ProtocolError("A-ASSOCIATE-RQ has no application context")
    if not contexts:
        raise ProtocolError("A-ASSOCIATE-RQ proposes no presentation context")
    if not user_info:
        raise ProtocolError("A-ASSOCIATE-RQ has no user information item")
    return AssociateRq(
        version,
        called,
        calling,
        app_context,
        tuple(contexts),
        max_pdu,
        impl_uid,
        impl_version,
        roles,
    )


def _echo_ae(title: str) -> bytes:
    """An AE title echoed in the A-ASSOCIATE-AC as received (already printable ASCII)."""
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
    body = struct.pack(">HH", 1, 0) + _echo_ae(rq.called_ae) + _echo_ae(rq.calling_ae) + bytes(32)
    body += item(0x10, APPLICATION_CONTEXT.encode("ascii"))
    for r in results:
        body += item(
            0x21,
            struct.pack(">BBBB", r.id, 0, r.result, 0)
            + item(0x40, r.transfer_syntax.encode("ascii")),
        )
    user = item(0x51, struct.pack(">I", max_pdu)) + item(
        0x52, implementation_class_uid.encode("ascii")
    )
    for uid, (scu, scp) in sorted(roles.items()):
        raw = uid.encode("ascii")
        user += item(0x54, struct.pack(">H", len(raw)) + raw + bytes([scu, scp]))
    user += item(0x55, implementation_version_name.encode("ascii")[:16])
    body += item(0x50, user)
    return struct.pack(">BBI", ASSOCIATE_AC, 0, len(body)) + body
