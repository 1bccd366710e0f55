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
    rq: AssociateRq, supported: Mapping[str, frozenset[str]]
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
