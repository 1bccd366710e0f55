"""STOW-RS response mapping (PS3.18 §10.5.3) and request splitting, without a network: the
responses below have the shape Orthanc's DICOMweb plugin and the standard give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.messages import Destination
from cinebridge_sender import scu, stow
from pydantic import ValidationError


def item(uid: str, path: Path = Path("/nonexistent")) -> scu.Item:
    return scu.Item(uid, path, "1.2.840.10008.5.1.4.1.1.7", uid, "1.2.840.10008.1.2.4.50")


def sop(uid: str, reason_tag: str | None = None, reason: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {stow.REFERENCED_SOP_INSTANCE_UID: {"vr": "UI", "Value": [uid]}}
    if reason_tag:
        entry[reason_tag] = {"vr": "US", "Value": [reason]}
    return entry


def body(referenced: list[Any], failed: list[Any]) -> dict[str, Any]:
    return {
        stow.REFERENCED_SOP_SEQUENCE: {"vr": "SQ", "Value": referenced},
        stow.FAILED_SOP_SEQUENCE: {"vr": "SQ", **({"Value": failed} if failed else {})},
    }


def outcomes(status: int, response: Any, uids: list[str]) -> list[tuple[str, int | None]]:
    return [(r.outcome, r.status) for r in stow.answer(status, response, map(item, uids), 0.0)]


def test_each_instance_is_read_from_the_response_module() -> None:
    response = body(
        [sop("1"), sop("2", stow.WARNING_REASON, 0xB000)],
        [
            sop("3", stow.FAILURE_REASON, 0xA700),
            sop("4", stow.FAILURE_REASON, 0x0122),
            sop("5", stow.FAILURE_REASON, 0xC000),
            sop("6"),
        ],
    )
    assert outcomes(202, response, ["1", "2", "3", "4", "5", "6", "7"]) == [
        ("sent", 0x0000),
        ("warning", 0xB000),  # stored with a warning, as for C-STORE Table 11
        ("failed-retrying", 0xA700),  # out of resources: retried
        ("failed-permanent", 0x0122),  # SOP class not supported: permanent
        ("failed-retrying", 0xC000),  # cannot understand: retried, as for C-STORE
        ("failed-retrying", 0x0110),  # no reason given: processing failure, retried
        ("failed-retrying", None),  # 202 without a word about it: sent again
    ]


def test_orthanc_400_with_a_failed_instance_is_read_per_instance() -> None:
    # Orthanc answers 400 (not 202) when one instance of the request failed, docs/peers.md.
    response = body([sop("1")], [sop("2", stow.FAILURE_REASON, 0xC000)])
    assert outcomes(400, response, ["1", "2", "3"]) == [
        ("sent", 0x0000),
        ("failed-retrying", 0xC000),
        ("failed-permanent", None),
    ]


def test_200_without_a_body_stores_all_and_409_without_one_fails_all() -> None:
    assert outcomes(200, None, ["1", "2"]) == [("sent", 0), ("sent", 0)]
    assert outcomes(409, None, ["1"]) == [("failed-permanent", None)]


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        *[(401, False), (403, False), (404, False), (413, False), (415, False)],
        *[(408, True), (429, True), (500, True), (502, True), (503, True), (504, True)],
    ],
)
def test_a_status_for_the_whole_request_is_a_failed_destination(
    status: int, transient: bool
) -> None:
    with pytest.raises(stow.ArchiveFailed) as failed:
        stow.answer(status, {"error": "x"}, [item("1")], 0.0)
    assert failed.value.transient is transient
    assert f"HTTP {status}" in failed.value.reason


def test_requests_are_split_by_bytes_with_a_large_instance_alone() -> None:
    items = [item(str(i)) for i in range(5)]
    sizes = {"0": 40, "1": 40, "2": 300, "3": 10, "4": 10}
    groups = stow.requests_of(items, sizes, max_bytes=100)
    assert [[i.key for i in g] for g in groups] == [["0", "1"], ["2"], ["3", "4"]]


def test_a_batch_is_dealt_over_lanes_only_when_it_is_worth_it() -> None:
    assert [[i.key for i in lane] for lane in stow.lanes_of([item("a"), item("b")], 4)] == [
        ["a", "b"]
    ]
    many = [item(str(n)) for n in range(20)]
    lanes = stow.lanes_of(many, 4)
    assert len(lanes) == 2  # 20 // 8
    assert sorted(i.key for lane in lanes for i in lane) == sorted(i.key for i in many)


async def test_multipart_body_is_the_files_between_boundaries(tmp_path: Path) -> None:
    files = []
    for n, content in enumerate([b"DICM-one", b"DICM-two-longer" * 100_000]):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(content)
        files.append(item(str(n), path))
    sizes = {i.key: i.path.stat().st_size for i in files}
    heads = [b"--b\r\nContent-Type: application/dicom\r\n\r\n"] * 2
    pieces = [p async for p in stow._body(files, heads, b"--b--\r\n", sizes)]
    assert max(len(p) for p in pieces) <= stow.CHUNK
    whole = b"".join(pieces)
    parts = [h + i.path.read_bytes() + b"\r\n" for h, i in zip(heads, files, strict=True)]
    assert whole == b"".join(parts) + b"--b--\r\n"


def test_destination_kinds_and_urls_are_checked() -> None:
    web = Destination(name="a", kind="dicomweb", base_url="https://pacs.example/dicom-web/")
    assert web.base_url == "https://pacs.example/dicom-web"
    for bad in ("ftp://pacs/dw", "https://user:pw@pacs/dw", "https:///dw", "https://pacs/dw#x"):
        with pytest.raises(ValidationError):
            Destination(name="a", kind="dicomweb", base_url=bad)
    with pytest.raises(ValidationError):
        Destination(name="a", kind="dimse", host="pacs")
    with pytest.raises(ValidationError):
        Destination(name="a", kind="dicomweb", base_url="https://pacs/dw", auth="basic")
    secret = Destination(name="a", kind="dicomweb", base_url="http://p/dw", secret="s3cr3t!")
    assert "s3cr3t!" not in repr(secret)
    with pytest.raises(ValidationError) as refused:
        Destination(name="a", kind="dicomweb", base_url="ftp://p/dw", secret="s3cr3t!")
    assert "s3cr3t!" not in str(refused.value)
