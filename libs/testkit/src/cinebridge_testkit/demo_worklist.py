"""A deterministic demo/test worklist: N entries with every Table 18 attribute, as `*.wl` files.

The same folder serves DCMTK `wlmscpfs` (`--data-files-path`, one sub-folder per called AE
title) and Orthanc's folder-based worklists plugin. Files are made with DCMTK `dump2dcm` from
dcmdump-format text written in each entry's own character set, so the bytes on disk are what a
RIS would send. Used by the integration tests, `bench/worklist.py` and demo setups:
`python -m cinebridge_testkit.demo_worklist OUT_DIR [COUNT]`.

Layout of entry i (the tests rely on it):
- modality `MODALITIES[i % 5]`, station AE `STATIONS[i % 4]`, start date today + (i % 7 - 3);
- patient ID `PID%05d`, accession `ACC%06d`, requested procedure ID `RP%05d`, SPS ID `SPS%05d`;
- entry 0 is Latin-1 (ISO_IR 100), entry 1 UTF-8 (ISO_IR 192), the rest plain ASCII;
- two Requested Procedure Code items and two Scheduled Protocol Code items per entry.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cinebridge_common.uids import make_uid

MODALITIES = ("ES", "US", "XC", "GM", "OT")
STATIONS = ("ROOM1", "ROOM2", "ROOM3", "ROOM4")
LAST_NAMES = (
    "SMITH",
    "JONES",
    "TAYLOR",
    "BROWN",
    "WILSON",
    "EVANS",
    "THOMAS",
    "ROBERTS",
    "JOHNSON",
    "WALKER",
    "WHITE",
    "GREEN",
    "HALL",
    "WOOD",
    "CLARKE",
    "HUGHES",
    "LEWIS",
    "EDWARDS",
    "HILL",
    "MOORE",
)
FIRST_NAMES = (
    "OLIVER",
    "AMELIA",
    "HARRY",
    "ISLA",
    "GEORGE",
    "AVA",
    "NOAH",
    "MIA",
    "JACK",
    "IVY",
    "LEO",
    "LILY",
    "OSCAR",
    "ROSE",
    "CHARLIE",
    "GRACE",
    "ARTHUR",
    "ELLA",
    "HENRY",
    "ZOE",
    "ALFIE",
    "EVIE",
    "FREDDIE",
    "SOPHIA",
    "THEO",
    "FREYA",
    "ARCHIE",
    "EMILY",
    "JOSHUA",
    "POPPY",
    "FINLEY",
)
LATIN1_NAME = "MÜLLER^JÜRGEN"
UTF8_NAME = "ŁUKASIEWICZ^ZOË=山田^太郎"
#: The called AE title of the demo worklist (wlmscpfs reads `<root>/<AE>/*.wl`).
DEMO_AE = "CBWORKLIST"
#: The size of the worklist the integration tests and the benchmark load.
DEFAULT_COUNT = 1000


@dataclass(frozen=True)
class Element:
    tag: str
    vr: str
    value: str | list[list[Element]]


def _sq(tag: str, items: list[list[Element]]) -> Element:
    return Element(tag, "SQ", items)


def _code(value: str, meaning: str) -> list[Element]:
    return [
        Element("0008,0100", "SH", value),
        Element("0008,0102", "SH", "99CB"),
        Element("0008,0103", "SH", "1.0"),
        Element("0008,0104", "LO", meaning),
    ]


def patient_name(i: int) -> str:
    if i == 0:
        return LATIN1_NAME
    if i == 1:
        return UTF8_NAME
    return f"{LAST_NAMES[i % len(LAST_NAMES)]}^{FIRST_NAMES[i % len(FIRST_NAMES)]}"


def charset(i: int) -> str | None:
    return {0: "ISO_IR 100", 1: "ISO_IR 192"}.get(i)


def sps_date(i: int, today: dt.date) -> str:
    return (today + dt.timedelta(days=i % 7 - 3)).strftime("%Y%m%d")


def entry(i: int, today: dt.date) -> list[Element]:
    """Every Table 18 attribute of entry i, in tag order."""
    ref = [
        [
            Element("0008,1150", "UI", "1.2.840.10008.3.1.2.3.1"),
            Element("0008,1155", "UI", make_uid("demo-wl-study-ref", str(i))),
        ]
    ]
    pref = [
        [
            Element("0008,1150", "UI", "1.2.840.10008.3.1.2.1.1"),
            Element("0008,1155", "UI", make_uid("demo-wl-patient-ref", str(i))),
        ]
    ]
    sps = [
        Element("0008,0060", "CS", MODALITIES[i % len(MODALITIES)]),
        Element("0032,1070", "LO", "NONE"),
        Element("0040,0001", "AE", STATIONS[i % len(STATIONS)]),
        Element("0040,0002", "DA", sps_date(i, today)),
        Element("0040,0003", "TM", f"{8 + i % 10:02d}{(i * 7) % 60:02d}00"),
        Element("0040,0006", "PN", f"DR^{LAST_NAMES[(i + 3) % len(LAST_NAMES)]}"),
        Element("0040,0007", "LO", f"Step {i} description"),
        _sq("0040,0008", [_code(f"P{i % 9}", "Protocol A"), _code(f"Q{i % 9}", "Protocol B")]),
        Element("0040,0009", "SH", f"SPS{i:05d}"),
        Element("0040,0010", "SH", f"STATION{i % 4 + 1}"),
        Element("0040,0011", "SH", f"SITE{i % 3}"),
        Element("0040,0012", "LO", "NONE"),
        Element("0040,0020", "CS", "SCHEDULED"),
    ]
    elements = [
        Element("0008,0050", "SH", f"ACC{i:06d}"),
        Element("0008,0090", "PN", f"REF^{FIRST_NAMES[(i + 5) % len(FIRST_NAMES)]}"),
        _sq("0008,1110", ref),
        _sq("0008,1120", pref),
        Element("0008,1080", "LO", f"Diagnosis {i % 13}"),
        Element("0010,0010", "PN", patient_name(i)),
        Element("0010,0020", "LO", f"PID{i:05d}"),
        Element("0010,0021", "LO", "HOSPITAL-A"),
        Element("0010,0030", "DA", f"{1940 + i % 60}{1 + i % 12:02d}{1 + i % 28:02d}"),
        Element("0010,0040", "CS", "MFO"[i % 3]),
        Element("0010,1030", "DS", f"{50 + i % 50}.5"),
        Element("0010,2000", "LO", "NONE" if i % 2 else "LATEX"),
        Element("0010,2110", "LO", "PENICILLIN" if i % 5 == 0 else "NONE"),
        Element("0010,21b0", "LT", f"History of entry {i}"),
        Element("0010,21c0", "US", str(4 if i % 3 else 1)),
        Element("0020,000d", "UI", make_uid("demo-wl-study", str(i))),
        Element("0032,1032", "PN", f"REQ^{LAST_NAMES[(i + 7) % len(LAST_NAMES)]}"),
        Element("0032,1033", "LO", "GASTROENTEROLOGY"),
        Element("0032,1060", "LO", f"Procedure {i % 11}"),
        _sq("0032,1064", [_code(f"C{i % 17}", "Code A"), _code(f"D{i % 17}", "Code B")]),
        Element("0038,0010", "LO", f"ADM{i:05d}"),
        Element("0038,0050", "LO", "NONE"),
        Element("0038,0300", "LO", f"WARD{i % 6}"),
        Element("0038,0500", "LO", "STABLE"),
        _sq("0040,0100", [sps]),
        Element("0040,1001", "SH", f"RP{i:05d}"),
        Element("0040,1003", "SH", ("STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW")[i % 5]),
        Element("0040,1004", "LO", "WALKING"),
        Element("0040,2016", "LO", f"PLACER{i:05d}"),
        Element("0040,2017", "LO", f"FILLER{i:05d}"),
        Element("0040,3001", "LO", "NONE"),
    ]
    cs = charset(i)
    if cs:
        elements.insert(0, Element("0008,0005", "CS", cs))
    return elements


def to_dump(elements: list[Element]) -> str:
    """dcmdump-format text that `dump2dcm` turns into a dataset."""
    lines: list[str] = []
    for elem in elements:
        if isinstance(elem.value, list):
            lines.append(f"({elem.tag}) SQ (Sequence with undefined length)")
            for item in elem.value:
                lines.append("(fffe,e000) na (Item with undefined length)")
                lines.extend(to_dump(item).splitlines())
                lines.append("(fffe,e00d) na (ItemDelimitationItem)")
            lines.append("(fffe,e0dd) na (SequenceDelimitationItem)")
        elif elem.vr == "US":
            lines.append(f"({elem.tag}) US {elem.value}")
        else:
            lines.append(f"({elem.tag}) {elem.vr} [{elem.value}]")
    return "\n".join(lines) + "\n"


def _encoding(i: int) -> str:
    return {"ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}.get(charset(i) or "", "ascii")


def write_worklist(folder: Path, count: int, today: dt.date, *, workers: int = 2) -> list[Path]:
    """Write `count` entries as `wl_NNNNN.wl` in `folder` (made with dump2dcm); returns them."""
    dump2dcm = shutil.which("dump2dcm")
    if dump2dcm is None:
        raise RuntimeError("dump2dcm (DCMTK) is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    dumps = folder / ".dump"
    dumps.mkdir(exist_ok=True)

    def make(i: int) -> Path:
        source = dumps / f"wl_{i:05d}.dump"
        target = folder / f"wl_{i:05d}.wl"
        source.write_bytes(to_dump(entry(i, today)).encode(_encoding(i)))
        # +te: Explicit VR Little Endian; -q: the dump carries no meta header to warn about.
        subprocess.run(
            [dump2dcm, "-q", "+te", str(source), str(target)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return target

    with ThreadPoolExecutor(max_workers=workers) as pool:
        files = list(pool.map(make, range(count)))
    shutil.rmtree(dumps)
    # wlmscpfs takes a read lock on `<AE folder>/lockfile` and fails the query (A700) without it.
    (folder / "lockfile").touch()
    return files


def main() -> None:
    out = Path(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_COUNT
    today = dt.datetime.now(dt.UTC).date()
    files = write_worklist(out / DEMO_AE, count, today)
    print(f"{len(files)} worklist files in {out / DEMO_AE} (called AE {DEMO_AE})")


if __name__ == "__main__":
    main()
