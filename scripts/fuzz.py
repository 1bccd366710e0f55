"""Run every fuzz target for a time budget, or (re)write the seed corpus.

`scripts/fuzz.py --seconds 60` runs tests/fuzz (corpus replay, then generated inputs for 60 s per
target) in one pytest process; its closing line is pytest's. `scripts/fuzz.py --seed` rewrites
the seed files in tests/fuzz/corpus/ from the SCP's malformed-PDU corpus
(tests/integration/scp/test_scp_bad_input.py) and valid messages made here; entries added by hand
(named other than `seed-*`) are kept.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import io
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _write(target: str, entries: dict[str, bytes]) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*.bin"):
        old.unlink()
    for label, data in entries.items():
        digest = hashlib.sha256(data).hexdigest()[:10]
        slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")[:40]
        (folder / f"seed-{slug}-{digest}.bin").write_bytes(data)
    print(f"{target}: {len(entries)} seed entries")


def _datasets() -> list[tuple[str, object]]:
    """Small datasets of the shapes the station meets: stills, video, sequences, charsets."""
    from pydicom.dataset import Dataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    def base(sop_class: str) -> Dataset:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientName = "Müller^Jürgen"
        ds.PatientID = "PID-1"
        ds.Modality = "ES"
        return ds

    ct = base("1.2.840.10008.5.1.4.1.1.2")
    ct.Rows = ct.Columns = 4
    ct.BitsAllocated = 16
    ct.PixelData = bytes(32)
    video = base("1.2.840.10008.5.1.4.1.1.77.1.1.1")
    video.NumberOfFrames = 2
    video.PixelData = encapsulate([b"\x00\x00\x01\x09" * 8], has_bot=False)
    video["PixelData"].VR = "OB"
    nested = base("1.2.840.10008.5.1.4.1.1.7")
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-56000", "SRT", "Colon"
    nested.AnatomicRegionSequence = Sequence([code, Dataset()])
    nested.AcquisitionContextSequence = Sequence([])
    return [("ct", ct), ("video", video), ("nested", nested)]


def _worklist_entries() -> list[tuple[str, object]]:
    """Worklist identifiers in the character sets the station supports, with empty values."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    out: list[tuple[str, object]] = []
    names: list[tuple[str | list[str], str]] = [
        ("ISO_IR 100", "Müller^Jürgen"),
        ("ISO_IR 192", "Ŝmith^Ĵohn=山田^太郎"),
        ("GB18030", "Wang^XiaoDong=王^小东"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ]
    for charset, name in names:
        ds = Dataset()
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        ds.PatientID = "PID00042"
        ds.PatientBirthDate = ""
        ds.OtherPatientIDs = ["A1", "B2"]
        ds.PatientWeight = "72.5"
        ds.AccessionNumber = ""
        sps = Dataset()
        sps.Modality = "ES"
        sps.ScheduledStationAETitle = "ROOM1"
        sps.ScheduledProcedureStepStartDate = "20261207"
        sps.ScheduledProcedureStepStartTime = "0800"
        sps.ScheduledProtocolCodeSequence = Sequence([])
        ds.ScheduledProcedureStepSequence = Sequence([sps])
        out.append((str(charset), ds))
    return out


def _part10(ds: object, syntax: str) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset

    assert isinstance(ds, Dataset)
    ds = copy.deepcopy(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    out = io.BytesIO()
    encapsulated = "PixelData" in ds and ds["PixelData"].VR == "OB"
    if encapsulated:
        meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _identifier(ds: object, implicit: bool, little: bool) -> bytes:
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    assert isinstance(ds, Dataset)
    ds = copy.deepcopy(ds)
    ds.pop("PixelData", None)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = little, implicit
    write_dataset(out, ds)
    return out.getvalue()


def seed() -> None:
    scp_tests = ROOT / "tests" / "integration" / "scp"
    conftest = _load(scp_tests / "conftest.py", "cinebridge_seed_scp_conftest")
    bad_input = _load(scp_tests / "test_scp_bad_input.py", "cinebridge_seed_scp_bad_input")
    targets = _load(ROOT / "tests" / "fuzz" / "targets.py", "cinebridge_fuzz_targets")
    raw = SimpleNamespace(
        pdu=conftest.pdu,
        associate_rq=conftest.associate_rq,
        command_set=conftest.command_set,
        p_data=conftest.p_data,
        echo_rq=conftest.echo_rq,
        store_rq=conftest.store_rq,
    )
    associate: dict[str, bytes] = {}
    p_data: dict[str, bytes] = {}
    for name, after_association, chunks in bad_input._corpus(raw):
        data = b"".join(chunks)
        if after_association:
            p_data[name] = data
        elif data[:1] == b"\x01" and len(data) > 6:
            associate[name] = data[6:]
    associate["valid"] = targets.valid_associate_rq()[6:]
    associate["valid max pdu 0"] = targets.valid_associate_rq(0)[6:]
    associate["conftest default"] = raw.associate_rq()[6:]

    commands: dict[str, bytes] = {
        "echo": raw.command_set(
            AffectedSOPClassUID="1.2.840.10008.1.1",
            CommandField=0x30,
            MessageID=1,
            CommandDataSetType=0x0101,
        ),
        "store": raw.command_set(
            AffectedSOPClassUID=targets.CT,
            CommandField=0x01,
            MessageID=7,
            Priority=0,
            CommandDataSetType=0,
            AffectedSOPInstanceUID="1.2.3.4",
        ),
        "store response": raw.command_set(
            AffectedSOPClassUID=targets.CT,
            CommandField=0x8001,
            MessageIDBeingRespondedTo=7,
            CommandDataSetType=0x0101,
            Status=0,
            AffectedSOPInstanceUID="1.2.3.4",
        ),
        "find": raw.command_set(
            AffectedSOPClassUID="1.2.840.10008.5.1.4.31",
            CommandField=0x20,
            MessageID=3,
            Priority=2,
            CommandDataSetType=0,
        ),
    }
    walk: dict[str, bytes] = {}
    worklist: dict[str, bytes] = {}
    syntaxes = {
        "implicit": "1.2.840.10008.1.2",
        "explicit": "1.2.840.10008.1.2.1",
        "big": "1.2.840.10008.1.2.2",
        "deflated": "1.2.840.10008.1.2.1.99",
    }
    for label, ds in _worklist_entries():
        for selector, (implicit, little) in enumerate(targets.WORKLIST_SYNTAXES):
            worklist[f"{label} {selector}"] = bytes([selector]) + _identifier(ds, implicit, little)
    for label, ds in _datasets():
        for ts_name, ts in syntaxes.items():
            data = _part10(ds, ts)
            walk[f"{label} {ts_name}"] = data
            walk[f"{label} {ts_name} cut"] = data[: len(data) * 2 // 3]
        for selector, (implicit, little) in enumerate(targets.WORKLIST_SYNTAXES):
            worklist[f"{label} {selector}"] = bytes([selector]) + _identifier(ds, implicit, little)
    # A store on the CT context, then an echo, then a release: the good path of p_data.
    ct = walk["ct explicit"]
    meta_end = 132 + 12 + struct.unpack_from("<I", ct, 140)[0]
    store = raw.store_rq(targets.CT, "1.2.3.4") + raw.p_data(3, 2, ct[meta_end:])
    p_data["store echo release"] = store + raw.echo_rq() + raw.pdu(5, bytes(4))
    p_data["echo abort"] = raw.echo_rq() + raw.pdu(7, bytes(4))
    for name, command in list(commands.items()):
        commands[f"{name} without group length"] = command[12:]
    for name, data in p_data.items():
        if data[:1] == b"\x04" and len(data) > 12:
            commands[f"from p-data {name}"] = data[12:]
    _write("associate_rq", associate)
    _write("p_data", p_data)
    _write("command_set", commands)
    _write("dataset_walk", walk)
    _write("worklist_json", worklist)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    parser.add_argument("--seed", action="store_true", help="rewrite the seed corpus and stop")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    if args.seed:
        seed()
        return 0
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        str(ROOT / "tests" / "fuzz"),
        f"--fuzz-seconds={args.seconds}",
        *args.pytest_args,
    ]
    return subprocess.call(command, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
