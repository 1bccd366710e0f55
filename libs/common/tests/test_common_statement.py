"""The statement renderer: sections 1-8 in order, numbered headings, the same tables in Markdown
and HTML, and names typed by users (destinations, AE titles) escaped in both."""

from __future__ import annotations

import datetime as dt

from cinebridge_common import statement as doc
from cinebridge_common.messages.conformance import (
    ApplicationEntity,
    ConformanceReply,
    NamedUid,
    SopClassSupport,
)

HOSTILE = "<script>alert(1)</script>|x"


def _reply() -> ConformanceReply:
    echo = SopClassSupport(
        name="Verification SOP Class",
        uid="1.2.840.10008.1.1",
        role="SCU",
        transfer_syntaxes=[NamedUid(name="Implicit VR Little Endian", uid="1.2.840.10008.1.2")],
    )
    ae = ApplicationEntity(
        name="Verification Client",
        service="sender",
        ae_title="SPACS",
        function="C-ECHO",
        sop_classes=[echo],
        policies={"Maximum PDU size received": "65536 bytes"},
        peers=[f"PACS@pacs:104 [{HOSTILE}]"],
    )
    return ConformanceReply(service="sender", version="1", application_entities=[ae])


def test_sections_numbered_and_user_text_escaped() -> None:
    station = doc.Station("1.0", dt.datetime(2026, 1, 2, tzinfo=dt.UTC), missing=["worklist (x)"])
    blocks = doc.build(station, [_reply()])
    top = [b.text for b in blocks if isinstance(b, doc.Heading) and b.level == 1]
    assert top == [
        "Conformance Statement Overview",
        "Table of Contents",
        "Introduction",
        "Networking",
        "Media Interchange",
        "Support of Character Sets",
        "Security",
        "Annexes",
    ]
    [toc] = [b for b in blocks if isinstance(b, doc.Bullets) and "4 Networking" in b.items]
    assert "4.2 AE Specifications" in toc.items
    html = doc.to_html(blocks)
    assert HOSTILE not in html and "&lt;script&gt;" in html
    markdown = doc.to_markdown(blocks)
    assert "&lt;script>alert(1)&lt;/script>\\|x" in markdown and "INCOMPLETE" in markdown
    [sops] = doc.tables(blocks, "SOP Classes of Verification Client")
    assert sops.rows == [["Verification SOP Class", "1.2.840.10008.1.1", "SCU", "None"]]
