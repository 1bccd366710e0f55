"""The statement's PDF renderer on its own: any text a user may type (destination names, AE
titles) renders, characters outside the PDF core fonts' Latin-1 are replaced rather than
failing the download, and a table longer than a page repeats its header row."""

from __future__ import annotations

import datetime as dt
import io

from cinebridge_common import statement as doc
from cinebridge_gateway.statement_pdf import latin1, to_pdf
from pypdf import PdfReader

AT = dt.datetime(2026, 12, 7, 8, 0, tzinfo=dt.UTC)


def _text(data: bytes) -> list[str]:
    return [" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(data)).pages]


def test_text_outside_latin1_is_replaced_not_refused() -> None:
    blocks: list[doc.Block] = [
        doc.Heading(1, "1", "Overview \u2014 \u201cquoted\u201d"),
        doc.Paragraph("Destination \u5185\u8996\u93e1 at r\u00f6ntgen \u2265 2 \u2026"),
        doc.Bullets(["PACS@pacs:104 [<script>]"]),
    ]
    [page] = _text(to_pdf(blocks, AT))
    assert 'Overview - "quoted"' in page
    assert "Destination ??? at r\u00f6ntgen >= 2 ..." in page
    assert "PACS@pacs:104 [<script>]" in page
    assert latin1("\u2264\u2013\u00e9") == "<=-\u00e9"


def test_long_table_repeats_its_header_on_every_page() -> None:
    rows = [[f"SOP class {i}", f"1.2.840.10008.5.1.4.1.1.{i}", "SCP"] for i in range(300)]
    blocks: list[doc.Block] = [
        doc.Heading(1, "4", "Networking"),
        doc.Table("SOP Classes of Storage Server", ["SOP Class", "UID", "Role"], rows),
    ]
    pages = _text(to_pdf(blocks, AT))
    assert len(pages) > 2
    assert all("SOP Class UID Role" in page for page in pages)
    joined = " ".join(pages)
    assert all(f"SOP class {i} 1.2.840.10008.5.1.4.1.1.{i} SCP" in joined for i in (0, 150, 299))
    assert PdfReader(io.BytesIO(to_pdf(blocks, AT))).metadata.title == doc.TITLE
