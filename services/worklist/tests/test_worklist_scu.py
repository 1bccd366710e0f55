"""The C-FIND SCU against an in-process pynetdicom SCP: Tables 16, 17 and 26 and bad answers."""

from __future__ import annotations

import gc
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from cinebridge_common.embedded import free_port
from cinebridge_common.messages import WorklistItem
from cinebridge_testkit.worklist_peers import FakeRis
from cinebridge_worklist.query import SearchFields, ServerKeys, build_identifier
from cinebridge_worklist.scu import FindLimits, Peer, echo, find_worklist
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import service_class


def code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = value, "99CB"
    item.CodingSchemeVersion, item.CodeMeaning = "1", meaning
    return item


def entry(i: int, *, name: str | None = None, charset: str | None = None) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.AccessionNumber = f"ACC{i:06d}"
    ds.PatientName = name or f"DOE^JOHN{i}"
    ds.PatientID = f"PID{i:05d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.PatientWeight = "72.5"
    ds.PregnancyStatus = 4
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1.{i + 1}"
    ds.RequestedProcedureID = f"RP{i:05d}"
    ds.RequestedProcedureDescription = "Colonoscopy"
    ds.RequestedProcedureCodeSequence = Sequence([code("C1", "Code A"), code("C2", "Code B")])
    sps = Dataset()
    sps.Modality = "ES"
    sps.ScheduledStationAETitle = "ROOM1"
    sps.ScheduledProcedureStepStartDate = "20261129"
    sps.ScheduledProcedureStepStartTime = "093000"
    sps.ScheduledProcedureStepID = f"SPS{i:05d}"
    sps.ScheduledProtocolCodeSequence = Sequence([code("P1", "Prot A"), code("P2", "Prot B")])
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def entries(count: int) -> Iterator[Dataset]:
    return (entry(i) for i in range(count))


def run(
    ris: FakeRis,
    limits: FindLimits | None = None,
    charset: str = "ISO_IR 192",
    fields: SearchFields | None = None,
):  # type: ignore[no-untyped-def]
    peer = Peer("127.0.0.1", ris.port, "FAKERIS", "SPACS")
    identifier = build_identifier(fields or SearchFields(), ServerKeys(modality="ES"))
    return find_worklist(peer, identifier, limits or FindLimits(timeout_s=5), charset)


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_collects_every_pending_response_in_each_table_15_syntax(syntax: str) -> None:
    with FakeRis(entries=lambda: entries(25), transfer_syntaxes=[syntax]) as ris:
        result = run(ris, fields=SearchFields(patient_name="doe^john"))
    assert result.outcome == "complete" and not result.incomplete, result.detail
    assert len(result.items) == 25 and result.warnings == []
    first = result.items[0]
    assert first.patient_name == "DOE^JOHN0" and first.modality == "ES"
    assert first.scheduled_procedure_step_id == "SPS00000"
    assert first.item_key and first.item_key != result.items[1].item_key
    # Sequences arrive with all their items (Table 18 nested attributes).
    codes = first.full_dataset()["00321064"]["Value"]
    assert [c["00080100"]["Value"][0] for c in codes] == ["C1", "C2"]
    protocol = first.full_dataset()["00400100"]["Value"][0]["00400008"]["Value"]
    assert [c["00080104"]["Value"][0] for c in protocol] == ["Prot A", "Prot B"]
    assert first.full_dataset()["00101030"]["Value"] == [72.5]
    assert first.full_dataset()["001021C0"]["Value"] == [4]
    # The SCP saw the Table 18 request with the P-key pattern and the C key.
    request = ris.requests[0]
    assert request.PatientName == "*doe*john*"
    assert request.ScheduledProcedureStepSequence[0].Modality == "ES"


def test_abort_mid_response_keeps_the_entries_received_and_flags_the_list() -> None:
    with FakeRis(entries=lambda: entries(50), abort_after=7) as ris:
        result = run(ris)
    assert result.outcome == "partial" and result.incomplete
    assert len(result.items) == 7
    assert "incomplete" in result.detail


def test_a_server_slower_than_the_limit_is_reported_as_a_timeout() -> None:
    with FakeRis(entries=lambda: entries(10), sleep_after=3, sleep_s=10.0) as ris:
        started = time.monotonic()
        result = run(ris, FindLimits(timeout_s=0.8))
        elapsed = time.monotonic() - started
    assert result.outcome == "timeout"
    assert len(result.items) == 3
    assert "0.8 s" in result.detail
    # Far below the server's 10 s stall, with room for a loaded machine.
    assert elapsed < 6.0, f"the 0.8 s limit took {elapsed:.2f} s"


def test_100000_matches_are_capped_cancelled_and_memory_stays_bounded() -> None:
    tracemalloc.start()
    try:
        with FakeRis(entries=lambda: entries(100_000)) as ris:
            result = run(ris, FindLimits(timeout_s=20, max_entries=100))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.outcome == "too_many" and result.incomplete
    assert len(result.items) == 100
    assert "narrow the search" in result.detail
    assert ris.cancelled, "the SCP never saw the C-CANCEL"
    assert ris.sent < 2_000, f"the SCP sent {ris.sent} entries before stopping"
    assert result.status == 0xFE00
    assert peak < 64 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"


def test_a_server_ignoring_c_cancel_is_aborted_after_the_grace_period() -> None:
    class Deaf(FakeRis):
        def _handle_find(self, event):  # type: ignore[no-untyped-def]
            for ds in entries(100_000):
                self.sent += 1
                yield 0xFF00, ds

    with Deaf() as ris:
        result = run(ris, FindLimits(timeout_s=20, max_entries=50, cancel_grace_s=0.5))
    assert result.outcome == "too_many"
    assert len(result.items) == 50
    assert any("after C-CANCEL" in w for w in result.warnings)


def wrong_vr() -> Dataset:
    ds = entry(2)
    del ds.PatientName
    ds.add(DataElement(0x00100010, "US", 5))  # Patient's Name sent as US
    return ds


def bad_charset() -> Dataset:
    return entry(3, charset="ISO_IR 999")


def invalid_utf8() -> Dataset:
    # pydicom re-encodes text on writing, so the invalid byte is put in after encoding (below).
    return entry(4, name="MXLLER^JOHN", charset="ISO_IR 192")


@pytest.mark.filterwarnings("ignore:Unknown encoding:UserWarning")  # the SCP side encoding it
def test_unreadable_entries_are_skipped_undecodable_ones_kept_and_flagged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_encode = service_class.encode

    def latin1_byte_in_utf8(*args: Any, **kwargs: Any) -> bytes | None:
        encoded = real_encode(*args, **kwargs)
        return encoded.replace(b"MXLLER", b"M\xdcLLER") if encoded else encoded

    monkeypatch.setattr(service_class, "encode", latin1_byte_in_utf8)

    def answers() -> Iterator[Dataset]:
        yield entry(0)
        yield wrong_vr()
        yield bad_charset()
        yield invalid_utf8()
        yield entry(5)

    with FakeRis(entries=answers, transfer_syntaxes=[ExplicitVRLittleEndian]) as ris:
        result = run(ris)
    assert result.outcome == "complete"
    # A VR against the dictionary cannot be read: skipped with the reason. A character set
    # problem keeps the patient, flagged (the configured set, or U+FFFD for what fails).
    assert [item.patient_id for item in result.items] == [
        "PID00000",
        "PID00003",
        "PID00004",
        "PID00005",
    ]
    assert len(result.warnings) == 1 and "VR US" in result.warnings[0], result.warnings
    unknown, undecodable = result.items[1], result.items[2]
    assert [(f.tag, f.action) for f in unknown.flags] == [("(0008,0005)", "configured set used")]
    assert "ISO_IR 999" in unknown.flags[0].problem
    assert undecodable.patient_name == "M\ufffdLLER^JOHN"
    assert [f.tag for f in undecodable.flags] == ["(0010,0010)"]
    assert "REPLACEMENT" in undecodable.flags[0].action or "\ufffd" in undecodable.flags[0].action
    assert not result.items[0].flags and not result.items[3].flags


def test_names_decode_with_the_response_or_the_configured_character_set() -> None:
    latin1_undeclared = entry(0)
    latin1_undeclared[0x00100010] = RawDataElement(
        Tag(0x00100010), "PN", 14, b"M\xdcLLER^J\xdcRGEN", 0, False, True
    )

    def answers() -> Iterator[Dataset]:
        yield entry(1, name="MÜLLER^JÜRGEN", charset="ISO_IR 100")
        yield entry(2, name="ŁUKASIEWICZ^ZOË=山田^太郎", charset="ISO_IR 192")
        yield latin1_undeclared

    with FakeRis(entries=answers, transfer_syntaxes=[ExplicitVRLittleEndian]) as ris:
        result = run(ris, charset="ISO_IR 100")
    assert [item.patient_name for item in result.items] == [
        "MÜLLER^JÜRGEN",
        "ŁUKASIEWICZ^ZOË=山田^太郎",
        "MÜLLER^JÜRGEN",
    ]
    assert result.items[1].full_dataset()["00100010"]["Value"][0] == {
        "Alphabetic": "ŁUKASIEWICZ^ZOË",
        "Ideographic": "山田^太郎",
    }


def test_a_failure_status_keeps_the_entries_and_says_why() -> None:
    with FakeRis(entries=lambda: entries(4), final_status=0xC001) as ris:
        result = run(ris)
    assert result.outcome == "failed" and len(result.items) == 4
    assert "0xC001" in result.detail


def test_server_down_is_unreachable_quickly() -> None:
    peer = Peer("127.0.0.1", free_port(), "NOBODY", "SPACS")
    started = time.monotonic()
    result = find_worklist(
        peer, build_identifier(SearchFields(), ServerKeys()), FindLimits(), "ISO_IR 192"
    )
    assert result.outcome == "unreachable" and result.items == []
    assert "NOBODY" in result.detail or "cannot connect" in result.detail
    assert time.monotonic() - started < 5


def test_echo_reports_reachability_and_round_trip() -> None:
    with FakeRis() as ris:
        ok = echo(Peer("127.0.0.1", ris.port, "FAKERIS", "SPACS"))
    assert ok.reachable and ok.rtt_ms is not None
    down = echo(Peer("127.0.0.1", free_port(), "NOBODY", "SPACS"), timeout_s=2)
    assert not down.reachable and down.reason


def test_an_oversized_identifier_aborts_with_the_entries_received_so_far() -> None:
    def answers() -> Iterator[Dataset]:
        yield entry(0)
        huge = entry(1)
        huge.add(DataElement(0x0040A160, "UT", "x" * (3 << 20)))  # 3 MiB Text Value
        yield huge
        yield entry(2)

    with FakeRis(entries=answers) as ris:
        result = run(ris, FindLimits(timeout_s=10, max_identifier_bytes=1 << 20))
    assert result.outcome == "partial"
    assert [item.patient_id for item in result.items] == ["PID00000"]
    assert "over 1048576 bytes" in result.detail


def _item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def associate_ac() -> bytes:
    """A-ASSOCIATE-AC accepting context 1 with Implicit VR LE (PS3.8 9.3.3)."""
    context = bytes([1, 0, 0, 0]) + _item(0x40, b"1.2.840.10008.1.2")
    body = (
        struct.pack(">HH", 1, 0)
        + b"FAKE".ljust(16)
        + b"SPACS".ljust(16)
        + bytes(32)
        + _item(0x10, b"1.2.840.10008.3.1.1.1")
        + _item(0x21, context)
        + _item(0x50, _item(0x51, struct.pack(">I", 16384)))
    )
    return struct.pack(">BBI", 0x02, 0, len(body)) + body


def test_a_pdu_longer_than_our_maximum_aborts_before_it_is_read() -> None:
    """docs/reliability.md §1.2: pynetdicom would keep reading a 4 GiB PDU; we stop at once."""
    listener = socket.create_server(("127.0.0.1", 0))

    def hostile_ris() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)  # A-ASSOCIATE-RQ
            conn.sendall(associate_ac())
            conn.recv(65536)  # C-FIND-RQ
            conn.sendall(struct.pack(">BBI", 0x04, 0, 0xFFFFFFF0))
            try:
                for _ in range(64):  # 4 MiB of PDU body, unless we hang up first
                    conn.sendall(bytes(65536))
            except OSError:
                pass

    thread = threading.Thread(target=hostile_ris, daemon=True)
    thread.start()
    peer = Peer("127.0.0.1", listener.getsockname()[1], "FAKE", "SPACS")
    result = find_worklist(
        peer, build_identifier(SearchFields(), ServerKeys()), FindLimits(timeout_s=5), ""
    )
    thread.join(10)
    listener.close()
    assert result.outcome == "partial" and result.items == []
    assert "PDU" in result.detail and "aborted" in result.detail


def test_rejections_say_why() -> None:
    with FakeRis(allowed_calling=["OTHER"]) as ris:
        refused = run(ris)
    assert refused.outcome == "unreachable"
    assert "rejected the association" in refused.detail
    assert "calling AE title not recognised" in refused.detail
    with FakeRis(transfer_syntaxes=[]) as ris:  # Verification only, no worklist
        no_mwl = run(ris)
    assert no_mwl.outcome == "unreachable"
    assert "accepted no presentation context" in no_mwl.detail


def tracked_objects(root: object) -> int:
    """Objects the cyclic collector tracks, reachable from `root` (each counted once), classes
    (and what they lead to) left out."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or not gc.is_tracked(obj) or isinstance(obj, type):
            continue
        seen.add(id(obj))
        stack.extend(gc.get_referents(obj))
    return len(seen)


def test_the_answer_is_kept_as_text_with_the_cyclic_gc_left_on() -> None:
    """An answer's entries are held as their JSON texts, not as DICOM JSON trees: 1,000 trees
    (~130,000 dicts and lists) alive while the answer is read made the collector scan them
    over and over, which the query used to avoid by pausing the collector process-wide."""
    seen: list[bool] = []

    def answers() -> Iterator[Dataset]:
        seen.append(gc.isenabled())  # the SCP runs in this process: same collector
        yield from entries(20)

    with FakeRis(entries=answers) as ris:
        result = run(ris)
    assert result.outcome == "complete" and len(result.items) == 20
    assert seen == [True] and gc.isenabled()
    first = result.items[0]
    # A few objects per entry (the model, its fields, the flags list), not its tree of ~100.
    assert tracked_objects(first) < 12, tracked_objects(first)
    dataset = first.full_dataset()
    assert tracked_objects(dataset) > 50  # what the entry held before
    assert dataset["00100020"] == {"vr": "LO", "Value": ["PID00000"]}
    assert first.model_dump(exclude={"dataset"}) == WorklistItem.model_validate_json(
        first.json_text()
    ).model_dump(exclude={"dataset"})
