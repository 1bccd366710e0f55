"""Ingest and ReceiveFile on fakes: the status for each outcome, and nothing left behind."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from cinebridge_common.store import MediaStore
from cinebridge_scp.ingest import Command, IndexOutcome, Ingest, InstanceFacts, _encodings, _text
from cinebridge_scp.receive import ReceiveConfig, ReceiveFile, SpareFiles
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT = "1.2.840.10008.5.1.4.1.1.2"


def part10(tmp_path: Path, **overrides: str) -> tuple[bytes, Dataset]:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P1"
    ds.Modality = "CT"
    ds.SpecificCharacterSet = "ISO_IR 100"
    for key, value in overrides.items():
        setattr(ds, key, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes(), ds


class FakeTicket:
    def __init__(self, index: FakeIndex, facts: InstanceFacts) -> None:
        self.index, self.facts = index, facts
        self.is_durable = self.abandoned = False

    def durable(self) -> None:
        # Said only once the file is under its final name.
        assert self.index.store.resolve(self.facts.rel_path).is_file()
        self.is_durable = True

    def abandon(self) -> bool:
        if self.index.commit_began:
            return False  # too late: the row's commit began (its outcome is unknown)
        self.abandoned = True
        return True

    def outcome(self, timeout_s: float) -> IndexOutcome:
        # The row commits only after the file was said durable.
        assert self.is_durable and not self.abandoned
        if self.index.fail:
            raise self.index.fail
        self.index.calls.append(self.facts)
        return IndexOutcome("row-1")


class FakeIndex:
    timeout_s = 5.0

    def __init__(self, fail: Exception | None = None, store: MediaStore | None = None) -> None:
        self.fail = fail
        #: The failure came from the row's COMMIT itself (connection lost mid-commit).
        self.commit_began = False
        self.store = store or MediaStore(Path("/nonexistent"))
        self.calls: list[InstanceFacts] = []
        self.tickets: list[FakeTicket] = []
        #: Whether each instance's file was already durable when it was handed over.
        self.begun_durable: list[bool] = []

    def begin(self, facts: InstanceFacts) -> FakeTicket:
        self.tickets.append(FakeTicket(self, facts))
        self.begun_durable.append(self.store.resolve(facts.rel_path).is_file())
        return self.tickets[-1]


@pytest.fixture
def store(tmp_path: Path) -> MediaStore:
    return MediaStore(tmp_path / "media")


def received(store: MediaStore, data: bytes, **config: object) -> ReceiveFile:
    tmp = store.tmp / "scp-test"
    tmp.mkdir(exist_ok=True)
    rf = ReceiveFile(ReceiveConfig(tmp, **config))  # type: ignore[arg-type]
    for start in range(0, len(data), 100):
        rf.write(data[start : start + 100])
    return rf


def leftovers(store: MediaStore) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file()]


def command(ds: Dataset) -> Command:
    return Command(CT, str(ds.SOPInstanceUID), "MODALITY", "127.0.0.1")


def test_success_stores_hashes_and_indexes(tmp_path: Path, store: MediaStore) -> None:
    data, ds = part10(tmp_path, PatientName="Müller^Jörg")
    index = FakeIndex(store=store)
    rf = received(store, data, max_bytes=1 << 20)
    assert Ingest(store, index, 64).store_instance(rf, command(ds)) == 0x0000
    (facts,) = index.calls
    assert facts.sha256 == hashlib.sha256(data).hexdigest() and facts.size == len(data)
    assert facts["patient_name"] == "Müller^Jörg" and facts["modality"] == "CT"
    assert facts.transfer_syntax_uid == ExplicitVRLittleEndian
    assert store.resolve(facts.rel_path).read_bytes() == data
    assert leftovers(store) == [store.resolve(facts.rel_path)]


@pytest.mark.parametrize("field", ["SOPInstanceUID", "SOPClassUID"])
def test_dataset_that_differs_from_command(tmp_path: Path, store: MediaStore, field: str) -> None:
    data, ds = part10(tmp_path)
    cmd = command(ds)
    cmd = Command(
        "1.2.3" if field == "SOPClassUID" else cmd.sop_class_uid,
        "1.2.3" if field == "SOPInstanceUID" else cmd.sop_instance_uid,
        cmd.calling_ae,
        cmd.source_address,
    )
    rf = received(store, data, max_bytes=1 << 20)
    assert Ingest(store, FakeIndex(), 64).store_instance(rf, cmd) == 0x0110
    assert leftovers(store) == []


def test_missing_study_uid(tmp_path: Path, store: MediaStore) -> None:
    data, ds = part10(tmp_path, StudyInstanceUID="")
    rf = received(store, data, max_bytes=1 << 20)
    assert Ingest(store, FakeIndex(), 64).store_instance(rf, command(ds)) == 0x0110
    assert leftovers(store) == []


def test_index_failure_answers_a700_and_removes_the_file(tmp_path: Path, store: MediaStore) -> None:
    data, ds = part10(tmp_path)
    rf = received(store, data, max_bytes=1 << 20)
    ingest = Ingest(store, FakeIndex(fail=ConnectionRefusedError("db down"), store=store), 64)
    assert ingest.store_instance(rf, command(ds)) == 0xA700
    assert leftovers(store) == []


def test_write_failure_drains_and_answers_a700(tmp_path: Path, store: MediaStore) -> None:
    data, ds = part10(tmp_path)

    def disk_full(size: int) -> None:
        if size > 200:
            raise OSError(28, "No space left on device")

    rf = received(store, data, max_bytes=1 << 20, fault=disk_full)
    assert rf.error is not None and "No space" in rf.error
    assert Ingest(store, FakeIndex(), 64).store_instance(rf, command(ds)) == 0xA700
    assert leftovers(store) == []


def test_size_limit(tmp_path: Path, store: MediaStore) -> None:
    data, ds = part10(tmp_path)
    rf = received(store, data, max_bytes=100)
    assert Ingest(store, FakeIndex(), 64).store_instance(rf, command(ds)) == 0xA700
    assert leftovers(store) == []


def test_truncated_file(tmp_path: Path, store: MediaStore) -> None:
    data, ds = part10(tmp_path)
    rf = received(store, data[:-3], max_bytes=1 << 20)
    assert Ingest(store, FakeIndex(), 64).store_instance(rf, command(ds)) == 0x0110
    assert leftovers(store) == []


def test_discard_removes_the_partial_file(tmp_path: Path, store: MediaStore) -> None:
    data, _ = part10(tmp_path)
    rf = received(store, data[:500], max_bytes=1 << 20)
    assert rf.path.exists()
    rf.discard()
    assert leftovers(store) == []


def test_commit_failure_answers_a700_and_removes_the_file(
    tmp_path: Path, store: MediaStore
) -> None:
    data, ds = part10(tmp_path)
    rf = received(store, data, max_bytes=1 << 20)
    index = FakeIndex(fail=ConnectionResetError("db gone"), store=store)
    assert Ingest(store, index, 64).store_instance(rf, command(ds)) == 0xA700
    assert leftovers(store) == [] and index.calls == []


def test_a_commit_of_unknown_outcome_answers_a700_and_keeps_the_durable_file(
    tmp_path: Path, store: MediaStore
) -> None:
    """The row may have committed: removing the file would leave it naming a missing file, and
    the peer's retry would then be kept-first against it. The file stays for the recovery
    sweep (which indexes it when the row is missing)."""
    data, ds = part10(tmp_path)
    rf = received(store, data, max_bytes=1 << 20)
    index = FakeIndex(fail=ConnectionResetError("connection lost during COMMIT"), store=store)
    index.commit_began = True
    assert Ingest(store, index, 64).store_instance(rf, command(ds)) == 0xA700
    (ticket,) = index.tickets
    assert leftovers(store) == [store.resolve(ticket.facts.rel_path)]
    assert store.resolve(ticket.facts.rel_path).read_bytes() == data


def test_fsync_failure_answers_a700_before_any_row(
    tmp_path: Path, store: MediaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, ds = part10(tmp_path)
    rf = received(store, data, max_bytes=1 << 20)
    index = FakeIndex(store=store)

    def eio(_fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("cinebridge_scp.receive.os.fsync", eio)
    assert Ingest(store, index, 64).store_instance(rf, command(ds)) == 0xA700
    assert index.calls == []
    # Its row was handed over before the fsync; it is given up, so it never commits.
    assert [(t.is_durable, t.abandoned) for t in index.tickets] == [(False, True)]
    assert leftovers(store) == []


def test_small_instances_are_handed_over_before_their_fsync_large_ones_after(
    tmp_path: Path, store: MediaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = FakeIndex(store=store)
    data, ds = part10(tmp_path)
    assert (
        Ingest(store, index, 64).store_instance(
            received(store, data, max_bytes=1 << 20), command(ds)
        )
        == 0
    )
    # The threshold from the instance it judges: generated UIDs differ in length, so one
    # taken from the first instance could leave a shorter second one under it.
    data, ds = part10(tmp_path)
    monkeypatch.setattr("cinebridge_scp.ingest.EARLY_INDEX_MAX_BYTES", len(data) - 1)
    assert (
        Ingest(store, index, 64).store_instance(
            received(store, data, max_bytes=1 << 20), command(ds)
        )
        == 0
    )
    assert index.begun_durable == [False, True] and len(index.calls) == 2


# PS3.5 Annex H (ISO 2022 IR 87 Japanese) and Annex I (ISO 2022 IR 149 Korean) examples, UTF-8
# and Latin-1 values, and plain ASCII under every character set.
CHARSET_CASES = [
    ("", b"Doe^Jane"),
    ("ISO_IR 100", b"Doe^Jane"),
    ("ISO_IR 100", "Müller^Jörg".encode("latin-1")),
    ("ISO_IR 192", "Müller^Jörg".encode()),
    ("ISO_IR 192", b"Doe^Jane "),
    ("GB18030", "Wang^XiaoDong=王^小東".encode("gb18030")),
    (
        "\\ISO 2022 IR 87",
        b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
    ),
    ("\\ISO 2022 IR 149", b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7"),
    ("ISO 2022 IR 13\\ISO 2022 IR 87", b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=Yamada\x00"),
]


@pytest.mark.parametrize(("charset", "value"), CHARSET_CASES)
def test_index_text_is_pydicom_decoding(charset: str, value: bytes) -> None:
    """The all-ASCII shortcut decodes exactly what pydicom's codec search does."""
    expected = decode_bytes(value, convert_encodings(charset.split("\\")), {0x5C, 0x3D, 0x5E})
    assert _text(value, _encodings(charset.encode())) == expected.rstrip("\x00 ").strip()


def test_a_day_folder_removed_meanwhile_is_made_again(tmp_path: Path, store: MediaStore) -> None:
    index = FakeIndex(store=store)
    for n in range(2):
        data, ds = part10(tmp_path)
        rf = received(store, data, max_bytes=1 << 20)
        assert Ingest(store, index, 64).store_instance(rf, command(ds)) == 0x0000
        folder = store.resolve(index.calls[-1].rel_path).parent
        assert store.resolve(index.calls[-1].rel_path).read_bytes() == data
        if n == 0:  # e.g. emptied and removed by an operator's clean-up
            store.resolve(index.calls[-1].rel_path).unlink()
            folder.rmdir()


def _wait_for_spares(spares: SpareFiles, folder: Path, count: int) -> list[Path]:
    deadline = time.monotonic() + 30
    while len(made := sorted(folder.glob("*.part"))) < count:
        assert time.monotonic() < deadline, f"{len(made)} spare files made, {count} expected"
        time.sleep(0.01)
    return made


def test_instances_are_received_into_files_made_ahead(tmp_path: Path, store: MediaStore) -> None:
    """A receive takes a file made ahead, the helper makes another, the instance is stored from
    it as from one made on the spot, and a stop removes the spares not taken."""
    folder = store.tmp / "scp-test"
    folder.mkdir()
    spares = SpareFiles(folder, keep=2)
    try:
        ahead = _wait_for_spares(spares, folder, 2)
        data, ds = part10(tmp_path)
        rf = received(store, data, max_bytes=1 << 20, spares=spares)
        assert rf.path in ahead
        index = FakeIndex(store=store)
        assert Ingest(store, index, 64).store_instance(rf, command(ds)) == 0x0000
        (facts,) = index.calls
        assert store.resolve(facts.rel_path).read_bytes() == data
        assert facts.sha256 == hashlib.sha256(data).hexdigest()
        refilled = _wait_for_spares(spares, folder, 2)
        assert rf.path not in refilled and all(p.stat().st_size == 0 for p in refilled)
    finally:
        spares.close()
    assert not list(folder.iterdir())


def test_without_a_spare_a_receive_makes_its_own_file(tmp_path: Path, store: MediaStore) -> None:
    """The helper cannot make files (its folder is gone): each receive says why it cannot
    create its own, the C-STORE answers A700, nothing is left."""
    folder = store.tmp / "scp-gone"
    folder.mkdir()
    spares = SpareFiles(folder, keep=1)
    try:
        _wait_for_spares(spares, folder, 1)
        for spare in folder.iterdir():
            spare.unlink()
        folder.rmdir()
        first = ReceiveFile(ReceiveConfig(folder, 1 << 20, spares=spares))  # the stale spare
        first.discard()
        data, ds = part10(tmp_path)
        rf = ReceiveFile(ReceiveConfig(folder, 1 << 20, spares=spares))
        rf.write(data)
        assert rf.error is not None and "cannot create the receive file" in rf.error
        index = FakeIndex(store=store)
        assert Ingest(store, index, 64).store_instance(rf, command(ds)) == 0xA700
        assert not index.calls and leftovers(store) == []
    finally:
        spares.close()
