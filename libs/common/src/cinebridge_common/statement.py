"""The station's DICOM Conformance Statement, in the structure of PS3.2 Annex A, from what the
services say about themselves (`messages.conformance`); rendered as Markdown or as HTML.

Pure: no bus, no database. `build()` turns the services' replies into a list of blocks (headings,
paragraphs, lists, tables); `to_markdown()` and `to_html()` write the same blocks, so the page and
the download never differ. Sections 1-8 follow PS3.2 A.1-A.8 (docs/conformance-statement.md).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .messages.conformance import ApplicationEntity, ConformanceReply, CreatedObject

TITLE = "CineBridge DICOM Conformance Statement"


@dataclass(frozen=True)
class Heading:
    level: int
    number: str
    text: str

    @property
    def anchor(self) -> str:
        return "s" + self.number.replace(".", "-")


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    caption: str
    columns: list[str]
    rows: list[list[str]]


Block = Heading | Paragraph | Bullets | Table


@dataclass
class Station:
    """What the gateway knows of the station itself."""

    version: str
    generated_at: dt.datetime
    #: Services that did not answer: their part is missing, and the statement says so.
    missing: list[str] = field(default_factory=list)


@dataclass
class _Doc:
    blocks: list[Block] = field(default_factory=list)
    _numbers: list[int] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        del self._numbers[level:]
        while len(self._numbers) < level:
            self._numbers.append(0)
        self._numbers[level - 1] += 1
        self.blocks.append(Heading(level, ".".join(map(str, self._numbers)), text))

    def p(self, text: str) -> None:
        self.blocks.append(Paragraph(text))

    def ul(self, items: Iterable[str]) -> None:
        items = list(items)
        if items:
            self.blocks.append(Bullets(items))

    def table(self, caption: str, columns: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(Table(caption, columns, rows))


def build(station: Station, replies: Sequence[ConformanceReply]) -> list[Block]:
    """Every block of the statement, sections 1-8 (the table of contents included)."""
    aes = [ae for reply in replies for ae in reply.application_entities]
    objects = [obj for reply in replies for obj in reply.created_objects]
    profile = next((r.iod_profile for r in replies if r.iod_profile), "")
    body = _Doc()
    _overview(body, station, aes)
    body.h(1, "Table of Contents")
    toc_at = len(body.blocks)
    _introduction(body, station, replies)
    _networking(body, aes)
    body.h(1, "Media Interchange")
    body.p(
        "No Media Storage Application Profile is supported (PS3.11). The converter writes Part 10"
        " files to the station's media store for sending; they are not DICOM interchange media."
    )
    _character_sets(body, aes)
    _security(body, aes)
    _annexes(body, objects, profile)
    toc = [f"{b.number} {b.text}" for b in body.blocks if isinstance(b, Heading) and b.level <= 2]
    body.blocks.insert(toc_at, Bullets(toc))
    return body.blocks


def _overview(doc: _Doc, station: Station, aes: list[ApplicationEntity]) -> None:
    doc.h(1, "Conformance Statement Overview")
    doc.p(
        "CineBridge turns the video of medical devices into DICOM studies: it captures stills and"
        " recordings, converts them into DICOM objects, sends them with the Storage Service,"
        " queries a Modality Worklist, and receives objects with a Storage Server. This statement"
        f" was generated from the running station (version {station.version}) on"
        f" {station.generated_at.isoformat(timespec='seconds')}: every table below is what the"
        " services negotiate and write with their present settings."
    )
    if station.missing:
        doc.p(
            "INCOMPLETE: these services did not answer and their parts are missing: "
            + ", ".join(station.missing)
            + "."
        )
    rows: dict[tuple[str, str], list[str]] = {}
    for ae in aes:
        for sop in ae.sop_classes:
            row = rows.setdefault((sop.name, sop.uid), [sop.name, sop.uid, "No", "No"])
            row[2 if sop.role == "SCU" else 3] = "Yes"
    ordered = sorted(rows.values(), key=lambda r: (r[2] != "Yes", r[0]))
    if len(ordered) > 12:
        # The Storage Server's long list is in 4.2; the overview names what the station makes.
        many = [r for r in ordered if r[2] == "No"]
        ordered = [r for r in ordered if r not in many] + [
            [f"{len(many)} further SOP classes (Storage Server)", "section 4.2", "No", "Yes"]
        ]
    doc.table("Network Services", ["SOP Class", "UID", "User (SCU)", "Provider (SCP)"], ordered)


def _introduction(doc: _Doc, station: Station, replies: Sequence[ConformanceReply]) -> None:
    doc.h(1, "Introduction")
    doc.h(2, "Revision History")
    doc.table(
        "Revision History",
        ["Version", "Date", "Services described"],
        [
            [
                station.version,
                station.generated_at.date().isoformat(),
                ", ".join(f"{r.service} {r.version}".strip() for r in replies),
            ]
        ],
    )
    doc.h(2, "Audience")
    doc.p("Hospital IT and integrators connecting modalities, PACS and RIS to this station.")
    doc.h(2, "Remarks")
    doc.p(
        "Generated on request from the running services; it changes when their settings change."
        " Notes of the services: " + ("; ".join(n for r in replies for n in r.notes) or "none.")
    )
    doc.h(2, "References")
    doc.ul(
        [
            "NEMA PS3.2 Conformance (Annex A: structure of this statement)",
            "NEMA PS3.3 Information Object Definitions",
            "NEMA PS3.4 Service Class Specifications",
            "NEMA PS3.5 Data Structures and Encoding; PS3.6 Data Dictionary",
            "NEMA PS3.7 Message Exchange; PS3.8 Network Communication Support",
            "NEMA PS3.15 Security and System Management Profiles",
        ]
    )


def _networking(doc: _Doc, aes: list[ApplicationEntity]) -> None:
    doc.h(1, "Networking")
    doc.h(2, "Implementation Model")
    doc.h(3, "Application Data Flow")
    doc.ul(f"{ae.name} ({ae.ae_title}, service {ae.service}): {ae.function}" for ae in aes)
    doc.h(3, "Functional Definition of AEs")
    for ae in aes:
        doc.p(f"{ae.name}: {' '.join(t for t in (ae.initiation, ae.acceptance) if t)}")
    doc.h(3, "Sequencing of Real-World Activities")
    doc.p(
        "A study exists (from the worklist, the patient form or unscheduled) before objects are"
        " made; the converter writes each still or recording as an instance of the study; the"
        " Storage Client sends each instance to every enabled destination and retries transient"
        " failures. Once a destination that requires Storage Commitment acknowledged every"
        " instance of a study, the Storage Commitment Client asks it to commit them; the report"
        " may come back on that association or on a new one to the Storage Server's AE. The"
        " Storage Server receives, and answers commitment requests, independently of the other"
        " AEs. When a worklist server has an MPPS SCP, the Performed Procedure Step Client"
        " reports each study's procedure step to it (IN PROGRESS at the first capture or at the"
        " start of the study, COMPLETED once the saved study is converted, or DISCONTINUED)."
    )
    doc.h(2, "AE Specifications")
    for ae in aes:
        _ae(doc, ae)
    doc.h(2, "Network Interfaces")
    doc.p(
        "TCP/IP over the host's interfaces, IPv4 and IPv6 as the host provides (PS3.8 9)."
        " Physical network: as the host (Ethernet)."
    )
    doc.h(2, "Configuration")
    doc.table(
        "AE Title / Presentation Address Mapping",
        ["Application Entity", "AE Title", "Listens on", "Remote AEs"],
        [[ae.name, ae.ae_title, ae.listen or "-", ", ".join(ae.peers) or "-"] for ae in aes],
    )


def _ae(doc: _Doc, ae: ApplicationEntity) -> None:
    doc.h(3, f"{ae.name} Specification")
    doc.h(4, "SOP Classes")
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    syntaxes: dict[tuple[str, ...], list[list[str]]] = {}
    for sop in ae.sop_classes:
        key = tuple(ts.uid for ts in sop.transfer_syntaxes)
        groups.setdefault(key, []).append([sop.name, sop.uid, sop.role, sop.extended_negotiation])
        syntaxes[key] = [[ts.name, ts.uid] for ts in sop.transfer_syntaxes]
    for n, (key, rows) in enumerate(groups.items(), 1):
        suffix = f" ({n} of {len(groups)})" if len(groups) > 1 else ""
        doc.table(
            f"SOP Classes of {ae.name}{suffix}",
            ["SOP Class", "UID", "Role", "Extended Negotiation"],
            rows,
        )
        doc.table(
            f"Transfer Syntaxes of these {len(rows)} SOP classes",
            ["Transfer Syntax", "UID"],
            syntaxes[key],
        )
    doc.h(4, "Association Policies")
    doc.table(
        f"Association policies of {ae.name}",
        ["Policy", "Value"],
        list(map(list, ae.policies.items())),
    )
    if ae.initiation:
        doc.h(4, "Association Initiation Policy")
        doc.p(ae.initiation)
    if ae.acceptance:
        doc.h(4, "Association Acceptance Policy")
        doc.p(ae.acceptance)
    if ae.activity:
        doc.h(4, "Real-World Activity")
        doc.p(ae.activity)
    if ae.statuses:
        doc.table(
            f"Status handling of {ae.name}",
            ["Service", "Status", "Code", "Meaning", "Behaviour"],
            [[r.service, r.status, r.code, r.meaning or "-", r.behaviour] for r in ae.statuses],
        )
    if ae.query_keys:
        doc.table(
            f"Query keys of {ae.name}",
            ["Attribute", "Tag", "Kind"],
            [[k.name, k.tag, k.kind] for k in ae.query_keys],
        )


def _character_sets(doc: _Doc, aes: list[ApplicationEntity]) -> None:
    doc.h(1, "Support of Character Sets")
    doc.table(
        "Specific Character Set (0008,0005) per AE",
        ["Application Entity", "Character sets"],
        [[ae.name, ", ".join(ae.character_sets) or "-"] for ae in aes],
    )


def _security(doc: _Doc, aes: list[ApplicationEntity]) -> None:
    doc.h(1, "Security")
    doc.h(2, "Security Profiles")
    doc.table(
        "Security profile in effect per AE (PS3.15 Annex B)",
        ["Application Entity", "Profile"],
        [[ae.name, ae.security] for ae in aes],
    )
    doc.h(2, "Association Level Security")
    doc.ul(
        f"{ae.name}: {ae.policies[k]}"
        for ae in aes
        for k in ("Accepted Calling AE Titles", "Accepted addresses", "Called AE Title check")
        if k in ae.policies
    )


def _annexes(doc: _Doc, objects: list[CreatedObject], profile: str) -> None:
    doc.h(1, "Annexes")
    doc.h(2, "IOD Contents")
    doc.p(
        f"The station's IOD profile is '{profile or 'unknown'}'. Each object below was built by the"
        " converter's own code from a generated still or recording and read back; its attributes"
        " are listed as written (values that depend on the study or the media are named by"
        " their source)."
    )
    for obj in objects:
        doc.h(3, f"{obj.sop_class.name}: {obj.kind}, Modality {obj.modality or '-'}")
        doc.p(
            f"SOP Class UID {obj.sop_class.uid}; Modality {obj.modality or 'from the study'};"
            " transfer syntaxes: " + ", ".join(f"{t.name} ({t.uid})" for t in obj.transfer_syntaxes)
        )
        doc.table(
            f"Modules of {obj.sop_class.name} ({obj.kind})", ["Module"], [[m] for m in obj.modules]
        )
        doc.table(
            f"Attributes of {obj.sop_class.name} ({obj.kind})",
            ["Module", "Attribute", "Tag", "VR", "Value"],
            [[a.module, a.name, a.tag, a.vr, a.value] for a in obj.attributes],
        )
    doc.h(2, "Data Dictionary of Private Attributes")
    doc.p("None: the converter writes no private attributes.")
    doc.h(2, "Coded Terminology and Templates")
    doc.p("Codes written are listed with their attributes in 8.1 (e.g. Anatomic Region Sequence).")
    doc.h(2, "Standard Extended, Specialized and Private SOP Classes")
    doc.p(
        "None in the 'standard' profile. The 'videostation' profile writes recordings as"
        " Secondary Capture Image objects with Multi-frame and Cine attributes, a Standard"
        " Extended SOP Class (PS3.4 B.1.3)."
    )
    doc.h(2, "Private Transfer Syntaxes")
    doc.p("None.")


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = [f"# {TITLE}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            out += [f"{'#' * (block.level + 1)} {block.number} {block.text}", ""]
        elif isinstance(block, Paragraph):
            out += [block.text, ""]
        elif isinstance(block, Bullets):
            out += [*(f"- {item}" for item in block.items), ""]
        else:
            out += [f"*{block.caption}*", ""]
            out.append("| " + " | ".join(block.columns) + " |")
            out.append("|" + "---|" * len(block.columns))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("")
    return "\n".join(out)


def _md_cell(text: str) -> str:
    # Names typed by users (destinations, servers) must not become markup in a Markdown viewer.
    text = text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")
    return text or " "


def to_html(blocks: Sequence[Block]) -> str:
    """The statement as an HTML fragment (the gateway wraps it in its page)."""
    e = html.escape
    out: list[str] = [f"<h1>{e(TITLE)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            n = min(block.level + 1, 6)
            out.append(f'<h{n} id="{block.anchor}">{e(block.number)} {e(block.text)}</h{n}>')
        elif isinstance(block, Paragraph):
            out.append(f"<p>{e(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block.items) + "</ul>")
        else:
            head = "".join(f"<th>{e(c)}</th>" for c in block.columns)
            rows = "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block.rows
            )
            out.append(
                f"<table><caption>{e(block.caption)}</caption><thead><tr>{head}</tr></thead>"
                f"<tbody>{rows}</tbody></table>"
            )
    return "\n".join(out)


def tables(blocks: Sequence[Block], caption_prefix: str) -> list[Table]:
    """The tables whose caption starts with `caption_prefix` (for tests and tools)."""
    return [b for b in blocks if isinstance(b, Table) and b.caption.startswith(caption_prefix)]
