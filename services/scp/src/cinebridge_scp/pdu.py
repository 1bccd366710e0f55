"""The acceptor's side of the Upper Layer (PS3.8 9.3, PS3.7 E.1), on `cinebridge_common.dicom_ul`.

Pure functions over bytes: parsing an A-ASSOCIATE-RQ (bounded, every length checked against
what is really there), negotiating, and building what we answer. `PduError` carries the A-ABORT
reason to send (PS3.8 Table 9-26: 1 unrecognised PDU, 2 unexpected PDU, 4 unrecognised PDU
parameter, 6 invalid PDU parameter value). The names re-exported here are the shared ones.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cinebridge_common.dicom_ul import (
    ABORT,
    APPLICATION_CONTEXT,
    ASSOCIATE_AC,
    ASSOCIATE_RJ,
    ASSOCIATE_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    NO_DATA_SET,
    P_DATA_TF,
    RELEASE_RP,
    RELEASE_RP_PDU,
    RELEASE_RQ,
    UNEXPECTED_PDU,
    UNRECOGNISED_PARAMETER,
    UNRECOGNISED_PDU,
    a_abort,
    ae_title,
    associate_rj,
    command_set,
    command_ui,
    command_us,
    item,
    items,
    p_data,
    parse_command,
    text,
    uid_value,
    us,
)
from cinebridge_common.dicom_ul import ProtocolError as PduError

__all__ = [
    "ABORT",
    "APPLICATION_CONTEXT",
    "ASSOCIATE_AC",
    "ASSOCIATE_RJ",
    "ASSOCIATE_RQ",
    "C_ECHO_RQ",
    "C_ECHO_RSP",
    "C_STORE_RQ",
    "C_STORE_RSP",
    "NO_DATA_SET",
    "P_DATA_TF",
    "RELEASE_RP",
    "RELEASE_RP_PDU",
    "RELEASE_RQ",
    "UNEXPECTED_PDU",
    "UNRECOGNISED_PDU",
    "AssociateRq",
    "ContextResult",
    "PduError",
    "ProposedContext",
    "a_abort",
    "associate_ac",
    "associate_rj",
    "command_ui",
    "command_us",
    "negotiate",
    "p_data",
    "parse_associate_rq",
    "parse_command",
    "response",
]

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
        raise PduError("A-ASSOCIATE-RQ shorter than its fixed fields")
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
                raise PduError("presentation context item too short")
            cid = value[0]
            if cid % 2 == 0 or cid in seen_ids:  # PS3.8 9.3.2.2: odd and unique
                raise PduError(f"presentation context id {cid} is even or repeated")
            seen_ids.add(cid)
            abstract = ""
            syntaxes: list[str] = []
            for sub, sub_value in items(value[4:], "presentation context"):
                if sub == 0x30:
                    abstract = text(sub_value, "abstract syntax")
                elif sub == 0x40:
                    syntaxes.append(text(sub_value, "transfer syntax"))
                else:
                    raise PduError(f"unexpected sub-item 0x{sub:02X} in a presentation context")
            if not abstract or not syntaxes:
                raise PduError(f"presentation context {cid} lacks its syntaxes")
            contexts.append(ProposedContext(cid, abstract, tuple(syntaxes)))
        elif kind == 0x50:
            user_info = True
            for sub, sub_value in items(value, "user information"):
                if sub == 0x51:
                    if len(sub_value) != 4:
                        raise PduError("maximum length sub-item is not 4 bytes")
                    (max_pdu,) = struct.unpack(">I", sub_value)
                elif sub == 0x52:
                    impl_uid = text(sub_value, "implementation class UID")
                elif sub == 0x55:
                    impl_version = text(sub_value, "implementation version name")
                elif sub == 0x54 and len(sub_value) >= 4:
                    (uid_length,) = struct.unpack_from(">H", sub_value, 0)
                    if 2 + uid_length + 2 != len(sub_value):
                        raise PduError("role selection sub-item length lies")
                    uid = text(sub_value[2 : 2 + uid_length], "role selection UID")
                    roles[uid] = (sub_value[2 + uid_length], sub_value[3 + uid_length])
                # 0x53 asynchronous operations, 0x56/0x57 extended negotiation, 0x58 user
                # identity: not supported; leaving them out of the A-ASSOCIATE-AC declines them.
        else:
            raise PduError(
                f"unexpected item 0x{kind:02X} in A-ASSOCIATE-RQ", UNRECOGNISED_PARAMETER
            )
    if not app_context:
        raise PduError("A-ASSOCIATE-RQ has no application context")
    if not contexts:
        raise PduError("A-ASSOCIATE-RQ proposes no presentation context")
    if not user_info:
        raise PduError("A-ASSOCIATE-RQ has no user information item")
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


# ------------------------------------------------------------------ DIMSE command sets (E.1)


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
