"""Presentation context negotiation as acceptor (PS3.8 9.3.3.2, PS3.7 D.3.3.4)."""

from __future__ import annotations

from collections.abc import Mapping

from .pdu import (
    ABSTRACT_NOT_SUPPORTED,
    ACCEPTANCE,
    TRANSFER_NOT_SUPPORTED,
    USER_REJECTION,
    AssociateRq,
    ContextResult,
)


def negotiate(
    rq: AssociateRq,
    supported: Mapping[str, frozenset[str]],
    both_roles: frozenset[str] = frozenset(),
) -> tuple[list[ContextResult], dict[str, tuple[int, int]]]:
    """Per proposed context, the first transfer syntax *in the requestor's order* that we
    support, so an instance is stored as sent (PS3.8 9.3.3.2). Our role is SCP only: a context
    whose requestor declines the SCU role is refused (PS3.7 D.3.3.4), except for the abstract
    syntaxes of `both_roles`, where the requestor may also be the SCP: a Storage Commitment
    SCP opening an association to send its N-EVENT-REPORT proposes SCU 0 / SCP 1 (PS3.4
    J.3.3), and gets both of its proposed roles back. Also the role replies."""
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
        if role is not None and cx.abstract_syntax in both_roles:
            role_replies[cx.abstract_syntax] = (role[0], role[1])
            if not (role[0] or role[1]):
                results.append(ContextResult(cx.id, USER_REJECTION, chosen, cx.abstract_syntax))
                continue
        elif role is not None:
            role_replies[cx.abstract_syntax] = (role[0], 0)
            if not role[0]:
                results.append(ContextResult(cx.id, USER_REJECTION, chosen, cx.abstract_syntax))
                continue
        results.append(ContextResult(cx.id, ACCEPTANCE, chosen, cx.abstract_syntax))
    return results, role_replies
