"""cinebridge_common.conformance checked against the conformance statement's own text."""

from __future__ import annotations

import re
from pathlib import Path

from cinebridge_common import conformance

STATEMENT = Path(__file__).parent / "data" / "conformance_statement.txt"
UID_CELL = re.compile(r"^[0-9][0-9. ]*[0-9]$")


def _table(start: str, stop: str) -> list[list[str]]:
    """Tab-separated rows between the line starting with `start` and the one with `stop`."""
    lines = STATEMENT.read_text(encoding="utf-8").splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith(start))
    last = next(n for n, line in enumerate(lines) if n > first and line.startswith(stop))
    return [line.split("\t") for line in lines[first + 1 : last]]


def _uid_rows(rows: list[list[str]]) -> list[tuple[str, str]]:
    """(name, uid) pairs; repairs the two PDF-extraction artefacts named in the module docstring."""
    pairs: list[tuple[str, str]] = []
    for cells in rows:
        if len(cells) < 2 or not UID_CELL.match(cells[1].strip()):
            continue
        name, uid = cells[0].replace(" ¹", "").strip(), cells[1].strip()
        if " " in uid:  # two rows glued together, the UID cell broken by a space
            uids = [u for u in re.split(r"(?=1\.2\.840\.10008\.)", uid.replace(" ", "")) if u]
            names = re.split(r" (?=X-Ray)", name)
            assert len(names) == len(uids) == 2, cells
            pairs += list(zip(names, uids, strict=True))
        else:
            pairs.append((name.replace("IntravaSCPlar", "Intravascular"), uid))
    return pairs


def test_table22_storage_classes_match_statement() -> None:
    rows = _uid_rows(_table("Table 22.", "Table 23."))
    assert rows[0] == conformance.VERIFICATION_SOP_CLASS
    assert rows[1:] == conformance.STORAGE_SOP_CLASSES
    assert len(conformance.STORAGE_SOP_CLASSES) == 236


def test_table19_lists_the_same_classes() -> None:
    # Table 19 has its own extraction damage, so compare the UIDs found anywhere in it.
    text = "\n".join("\t".join(r) for r in _table("Table 19.", "Table 20."))
    text = text.replace("Storage1.", "Storage 1.").replace(".1X-", ".1 X-")
    uids = set(re.findall(r"(?<![\d.])(1\.[0-9.]+[0-9]|2\.16\.[0-9.]+[0-9])(?![\d.])", text))
    table22 = {uid for _, uid in conformance.STORAGE_SOP_CLASSES}
    assert uids == table22 | {conformance.VERIFICATION_SOP_CLASS[1]}


def test_table23_transfer_syntaxes_match_statement() -> None:
    rows = _uid_rows(_table("Table 23.", "There is no validation"))
    assert rows == conformance.SCP_TRANSFER_SYNTAXES
    assert len(rows) == 45


def test_table10_sender_syntaxes_and_table9_classes() -> None:
    assert _uid_rows(_table("Table 10.", "¹ ILE")) == conformance.SENDER_TRANSFER_SYNTAXES
    table9 = _uid_rows(_table("Table 9.", "Table 10."))
    assert table9 == conformance.SENDER_SOP_CLASSES


def test_table25_and_21_defaults() -> None:
    rows = _table("Table 25.", "A client chooses")
    server = next(r for r in rows if r[0] == "Storage Server")
    assert server[1] == "" and int(server[2]) == conformance.DEFAULT_SCP_PORT
    client = next(r for r in rows if r[0] == "Verification Client")
    assert client[1] == conformance.DEFAULT_CLIENT_AE_TITLE
    impl = dict(r for r in (tuple(c) for c in _table("Table 21.", "4.2.4.3")) if len(r) == 2)
    assert impl["Implementation Class UID"] == conformance.STATEMENT_IMPLEMENTATION_CLASS_UID


def test_all_uids_are_valid_and_unique() -> None:
    from cinebridge_common.uids import is_valid_uid

    uids = [u for _, u in conformance.STORAGE_SOP_CLASSES + conformance.SCP_TRANSFER_SYNTAXES]
    assert len(uids) == len(set(uids))
    assert all(is_valid_uid(u) for u in uids)
