"""The conformance statement as a PDF file (A4), drawn with fpdf2 from the same blocks as the
page and the Markdown download (`cinebridge_common.statement`), so the three never differ.

Headings become the PDF's outline (bookmarks), tables keep their caption and repeat their header
row on each page. The PDF's own Helvetica covers Latin-1 only (no font file ships with the
gateway): typographic punctuation is spelled in ASCII and any other character outside Latin-1 —
possible only in names typed by users — prints as "?".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cinebridge_common import statement as doc
from fpdf import FPDF
from fpdf.enums import TableHeadingsDisplay, WrapMode, XPos, YPos
from fpdf.fonts import FontFace

FONT = "Helvetica"
#: Points per heading level (the title is level 0).
HEADING_SIZES = (18, 14, 12, 10.5)
BODY_SIZE = 9.5
TABLE_SIZE = 8
#: A column gets width by the length of its longest cell, within these bounds (characters).
COLUMN_CHARS = (6, 40)

_ASCII = str.maketrans(
    {
        "\u2010": "-",
        "\u2011": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2022": "-",
        "\u2026": "...",
        "\u2192": "->",
        "\u2264": "<=",
        "\u2265": ">=",
        "\u2260": "!=",
        "\u2212": "-",
    }
)


def latin1(text: str) -> str:
    """`text` as the core fonts can draw it."""
    return text.translate(_ASCII).encode("latin-1", "replace").decode("latin-1")


def to_pdf(blocks: Sequence[doc.Block], generated_at: dt.datetime) -> bytes:
    """The statement as PDF bytes; `generated_at` is also the document's creation date."""
    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_title(doc.TITLE)
    pdf.set_creator("CineBridge")
    pdf.set_creation_date(generated_at)
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_margins(18, 18, 18)
    pdf.add_page()
    _heading(pdf, 0, doc.TITLE)
    for block in blocks:
        if isinstance(block, doc.Heading):
            pdf.start_section(latin1(f"{block.number} {block.text}"), level=block.level - 1)
            _heading(pdf, block.level, f"{block.number} {block.text}")
        elif isinstance(block, doc.Paragraph):
            _text(pdf, block.text)
        elif isinstance(block, doc.Bullets):
            for item in block.items:
                _text(pdf, item, indent=4, bullet=True)
            pdf.ln(1.5)
        else:
            _table(pdf, block)
    return bytes(pdf.output())


def _heading(pdf: FPDF, level: int, text: str) -> None:
    size = HEADING_SIZES[min(level, len(HEADING_SIZES) - 1)]
    pdf.ln(3 if level else 0)
    pdf.set_font(FONT, "B", size)
    pdf.multi_cell(0, size * 0.5, latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(1.5)


def _text(pdf: FPDF, text: str, *, indent: float = 0, bullet: bool = False) -> None:
    pdf.set_font(FONT, "", BODY_SIZE)
    pdf.set_x(pdf.l_margin + indent)
    line = f"-  {text}" if bullet else text
    pdf.multi_cell(0, 4.6, latin1(line), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if not bullet:
        pdf.ln(1.5)


def _table(pdf: FPDF, table: doc.Table) -> None:
    pdf.set_font(FONT, "I", BODY_SIZE)
    pdf.multi_cell(0, 4.6, latin1(table.caption), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(0.5)
    pdf.set_font(FONT, "", TABLE_SIZE)
    low, high = COLUMN_CHARS
    widths = tuple(
        max(low, min(high, max((len(cell) for cell in column), default=0)))
        for column in zip(table.columns, *table.rows, strict=False)
    )
    with pdf.table(
        col_widths=widths,
        width=pdf.epw,
        text_align="LEFT",
        line_height=3.8,
        padding=0.8,
        wrapmode=WrapMode.CHAR,
        headings_style=FontFace(emphasis="BOLD", fill_color=(230, 230, 230)),
        repeat_headings=TableHeadingsDisplay.ON_TOP_OF_EVERY_PAGE,
    ) as drawn:
        for row in (table.columns, *table.rows):
            cells = drawn.row()
            for cell in row:
                cells.cell(latin1(cell))
    pdf.ln(3)
