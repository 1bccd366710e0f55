"""The conformance statement as the gateway serves it (HTML page, Markdown, PDF, JSON) and as
`cinebridge statement` prints it. The services' parts are answered on the bus by their own
`statement.describe` functions (the SCP's and the converter's contents are compared with a real
association and real objects in tests/integration/scp and tests/integration/converter)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from cinebridge_common.bus import Bus
from cinebridge_common.messages.conformance import (
    ConformanceReply,
    ConverterConformance,
    ScpConformance,
    SenderConformance,
    WorklistConformance,
)
from cinebridge_common.station import StationSettings
from cinebridge_converter import statement as converter_statement
from cinebridge_converter.settings import ConverterSettings
from cinebridge_scp import statement as scp_statement
from cinebridge_scp.settings import ScpSettings
from cinebridge_sender import statement as sender_statement
from cinebridge_sender.settings import SenderSettings
from cinebridge_worklist import statement as worklist_statement
from cinebridge_worklist.settings import WorklistSettings
from pypdf import PdfReader

from .test_gateway_cli import cli, new_token

SECTIONS = [
    "1 Conformance Statement Overview",
    "2 Table of Contents",
    "3 Introduction",
    "4 Networking",
    "5 Media Interchange",
    "6 Support of Character Sets",
    "7 Security",
    "8 Annexes",
]


async def serve_parts(bus: Bus, *, worklist: bool = True) -> None:
    scp = ScpSettings(scp_ae_title="ROOMSCP", scp_port=11999)

    async def on_scp(_: ScpConformance) -> ConformanceReply:
        return scp_statement.describe(scp, [11999])

    async def on_converter(_: ConverterConformance) -> ConformanceReply:
        return converter_statement.describe(StationSettings(), ConverterSettings())

    async def on_sender(req: SenderConformance) -> ConformanceReply:
        return sender_statement.describe(req, [], "SPACS", SenderSettings())

    async def on_worklist(_: WorklistConformance) -> ConformanceReply:
        return worklist_statement.describe([], StationSettings(), WorklistSettings())

    await bus.serve(ScpConformance, on_scp)
    await bus.serve(ConverterConformance, on_converter)
    await bus.serve(SenderConformance, on_sender)
    if worklist:
        await bus.serve(WorklistConformance, on_worklist)


async def test_page_download_and_cli(
    gateway: Any, admin: Any, peer_bus: Bus, tmp_path: Path
) -> None:
    await serve_parts(peer_bus)
    page = await admin.get("/statement")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    headings = re.findall(r'<h2 id="s\d+">([^<]+)</h2>', page.text)
    assert headings == SECTIONS
    assert "ROOMSCP" in page.text and "<script" not in page.text

    markdown = await admin.get("/api/v1/statement.md")
    assert markdown.status_code == 200
    assert "attachment" in markdown.headers["content-disposition"]
    assert [h[3:] for h in markdown.text.splitlines() if h.startswith("## ")] == SECTIONS

    data = (await admin.get("/api/v1/statement")).json()
    assert data["missing"] == []
    assert [s["service"] for s in data["services"]] == ["scp", "sender", "worklist", "converter"]
    # The Storage Client proposes, for each object the converter writes, its own syntax alone
    # and with Implicit VR Little Endian (statement Table 10, footnote 1).
    [storage] = [ae for s in data["services"] for ae in s["application_entities"]
                 if ae["name"] == "Storage Client"]  # fmt: skip
    written = {o["sop_class"]["uid"] for s in data["services"] for o in s["created_objects"]}
    assert {c["uid"] for c in storage["sop_classes"]} == written
    for sop in storage["sop_classes"]:
        assert sop["transfer_syntaxes"][-1]["uid"] == "1.2.840.10008.1.2"

    token = await new_token(admin)
    code, out = await cli(gateway, token, "statement")
    assert code == 0, out
    assert [line[3:] for line in out if line.startswith("## ")] == SECTIONS
    target = tmp_path / "statement.md"
    code, out = await cli(gateway, token, "statement", "-o", str(target))
    assert code == 0 and target.read_text(encoding="utf-8").startswith("# CineBridge DICOM")


async def test_a_silent_service_makes_it_incomplete(
    gateway: Any, admin: Any, peer_bus: Bus
) -> None:
    await serve_parts(peer_bus, worklist=False)
    data = (await admin.get("/api/v1/statement")).json()
    assert [m.split()[0] for m in data["missing"]] == ["worklist"]
    page = await admin.get("/statement")
    assert "INCOMPLETE" in page.text and "worklist" in page.text

    code, out = await cli(gateway, await new_token(admin), "statement")
    assert code == 1
    assert out[-1].startswith("incomplete: no answer from worklist")


async def test_pdf_download_and_cli(
    gateway: Any, admin: Any, peer_bus: Bus, tmp_path: Path
) -> None:
    """The PDF is a valid PDF (read back with pypdf) with every section heading in its outline
    and text, and a row of each SOP class table: the SCP's and the converter's SOP classes."""
    await serve_parts(peer_bus)
    answer = await admin.get("/api/v1/statement.pdf")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/pdf"
    assert "attachment" in answer.headers["content-disposition"]
    reader = PdfReader(io.BytesIO(answer.content))
    text = " ".join(" ".join(page.extract_text().split()) for page in reader.pages)
    assert [o.title for o in reader.outline if not isinstance(o, list)] == SECTIONS
    for heading in SECTIONS:
        assert heading in text
    assert "ROOMSCP" in text

    data = (await admin.get("/api/v1/statement")).json()
    [scp] = [s for s in data["services"] if s["service"] == "scp"]
    [converter] = [s for s in data["services"] if s["service"] == "converter"]
    received = [sop for ae in scp["application_entities"] for sop in ae["sop_classes"]]
    assert received
    # The first and last row of the Storage Server's SOP class table, and every object the
    # converter writes (its section 8.1 headings and table rows).
    for sop in [received[0], received[-1]]:
        assert sop["uid"] in text and sop["name"] in text
    for obj in converter["created_objects"]:
        assert obj["sop_class"]["uid"] in text and obj["sop_class"]["name"] in text

    token = await new_token(admin)
    target = tmp_path / "statement.pdf"
    code, out = await cli(gateway, token, "statement", "--format", "pdf", "-o", str(target))
    assert code == 0, out
    assert target.read_bytes().startswith(b"%PDF-")
    assert len(PdfReader(target).pages) == len(reader.pages)
    code, out = await cli(gateway, token, "statement", "--format", "pdf")
    assert code == 2 and out == []  # a PDF is never printed to a terminal
