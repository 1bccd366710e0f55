"""Presentation context negotiation that keeps what the peer has (PS3.8 9.3.2.2, 9.3.3.2).

pynetdicom picks, per proposed context, the first transfer syntax in the *acceptor's* list, so a
peer proposing [JPEG Baseline, Explicit VR LE] for a JPEG file would be made to decompress it.
We take the first syntax in the *requestor's* order that Table 23 lists, so every instance is
stored as sent. `_config.UNRESTRICTED_STORAGE_SERVICE` (needed to route C-STORE of private Table
22 classes to the storage service) would otherwise accept any storage-like class with any
syntax; this replaces that negotiation, so only Table 22 classes and Table 23 syntaxes pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pynetdicom import acse, build_context
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

_cache: dict[int, tuple[Sequence[PresentationContext], dict[str, frozenset[str]]]] = {}


def _supported(ac_contexts: Sequence[PresentationContext]) -> dict[str, frozenset[str]]:
    hit = _cache.get(id(ac_contexts))
    if hit is not None and hit[0] is ac_contexts:
        return hit[1]
    table = {str(cx.abstract_syntax): frozenset(map(str, cx.transfer_syntax)) for cx in ac_contexts}
    _cache[id(ac_contexts)] = (ac_contexts, table)
    return table


def negotiate_in_requestor_order(
    rq_contexts: list[PresentationContext],
    ac_contexts: list[PresentationContext],
    roles: dict[Any, Any] | None = None,
) -> tuple[list[PresentationContext], list[Any]]:
    supported = _supported(ac_contexts)
    results: list[PresentationContext] = []
    reply_roles: dict[str, Any] = {}
    for rq in rq_contexts:
        syntaxes = supported.get(str(rq.abstract_syntax))
        tailored: list[PresentationContext] = []
        if syntaxes is not None:
            ordered: list[str] = [str(ts) for ts in rq.transfer_syntax if str(ts) in syntaxes]
            # No common syntax: offer one we support so the result is 0x04 (PS3.8 9.3.3.2).
            chosen: list[Any] = ordered or [sorted(syntaxes)[0]]
            tailored = [build_context(str(rq.abstract_syntax), chosen)]
        result, role_items = negotiate_as_acceptor([rq], tailored, roles)
        results += result
        for item in role_items:
            reply_roles[str(item.sop_class_uid)] = item
    results.sort(key=lambda cx: int(cx.context_id or 0))
    return results, [reply_roles[k] for k in sorted(reply_roles)]


def install() -> None:
    """pynetdicom's ACSE calls this instead of its unrestricted negotiation."""
    acse.negotiate_unrestricted = negotiate_in_requestor_order  # type: ignore[attr-defined]
