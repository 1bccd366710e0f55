"""The conformance statement's SOP class and transfer syntax tables of the Storage Server against
what the running SCP negotiates: pynetdicom proposes every (SOP class, transfer syntax) pair of
the statement, plus a SOP class and a transfer syntax it does not list, one per presentation
context; the accepted pairs are exactly the statement's."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import pytest
from cinebridge_common import statement as doc
from cinebridge_common.bus import Bus
from cinebridge_common.messages.conformance import ConformanceReply, ScpConformance
from pynetdicom import AE, build_context

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

#: Neither is a DICOM UID (PS3.6 Annex A): no SCP may accept them.
UNKNOWN_SOP_CLASS = "1.2.826.0.1.3680043.10.1351.424242.1"
UNKNOWN_SYNTAX = "1.2.826.0.1.3680043.10.1351.424242.2"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
#: PS3.8 9.3.2.2: at most 128 presentation contexts in one A-ASSOCIATE-RQ.
PER_ASSOCIATION = 128


def statement_pairs(blocks: list[doc.Block]) -> set[tuple[str, str]]:
    """(SOP class UID, transfer syntax UID) of the rendered Storage Server section: each SOP
    class table is followed by the table of its transfer syntaxes."""
    pairs: set[tuple[str, str]] = set()
    # The Storage Server's tables, then the Storage Commitment Server's (same AE, same port).
    sops = doc.tables(blocks, "SOP Classes of Storage Server")
    sops += doc.tables(blocks, "SOP Classes of Storage Commitment Server")
    syntaxes = doc.tables(blocks, "Transfer Syntaxes of these")
    assert sops and len(sops) == len(syntaxes)
    for sop_table, ts_table in zip(sops, syntaxes, strict=True):
        assert [c for c in sop_table.columns[:3]] == ["SOP Class", "UID", "Role"]
        assert all(row[2] == "SCP" for row in sop_table.rows)
        pairs |= {(s[1], t[1]) for s in sop_table.rows for t in ts_table.rows}
    return pairs


def negotiate(port: int, ae_title: str, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Propose each pair as its own context, 128 to an association; the accepted pairs."""
    accepted: set[tuple[str, str]] = set()
    for start in range(0, len(pairs), PER_ASSOCIATION):
        chunk = pairs[start : start + PER_ASSOCIATION]
        ae = AE(ae_title="STATEMENTTEST")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.requested_contexts = [build_context(sop, [ts]) for sop, ts in chunk]
        assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
        assert assoc.is_established, f"association {start // PER_ASSOCIATION} not established"
        try:
            for context in assoc.accepted_contexts:
                assert context.transfer_syntax is not None
                accepted.add((str(context.abstract_syntax), str(context.transfer_syntax[0])))
        finally:
            assoc.release()
    return accepted


async def test_statement_tables_equal_what_the_scp_negotiates(scp: Any, nats_url: str) -> None:
    bus = await Bus.connect(nats_url, "statement-test")
    try:
        reply = await bus.request(ScpConformance(), ConformanceReply, 30)
    finally:
        await bus.close()
    assert reply.ok, reply.error
    server, commitment = reply.application_entities
    assert server.ae_title == scp.ae_title and server.listen.endswith(f":{scp.port}")
    assert commitment.ae_title == scp.ae_title and commitment.listen == server.listen
    blocks = doc.build(doc.Station("test", dt.datetime.now(dt.UTC)), [reply])
    listed = statement_pairs(blocks)
    sop_classes = sorted({sop for sop, _ in listed} | {UNKNOWN_SOP_CLASS})
    syntaxes = sorted({ts for _, ts in listed} | {UNKNOWN_SYNTAX})
    proposed = list(itertools.product(sop_classes, syntaxes))
    # Verification, the 236 storage classes of Table 22 and Storage Commitment Push Model
    # (PS3.4 Annex J), plus the unknown one; the 45 syntaxes of Table 23 and the unknown one.
    assert STORAGE_COMMITMENT in sop_classes
    assert (len(sop_classes), len(syntaxes)) == (239, 46)

    accepted = await asyncio.to_thread(negotiate, scp.port, scp.ae_title, proposed)

    assert accepted == listed, (
        f"accepted, not listed: {sorted(accepted - listed)[:5]}; "
        f"listed, not accepted: {sorted(listed - accepted)[:5]}"
    )
