"""`cinebridge-convert`: files to DICOM Part 10 outside the running system, with the service's code.

    cinebridge-convert FILE... --patient-name NAME --patient-id ID [--accession NUMBER]
        [--worklist-item JSON] [--iod PROFILE] [--transfer-syntax UID] [--modality CODE]
        [--station-name AE] [--send DESTINATION [--send-timeout S]] -o DIR

All files of one run form one study (the worklist item's, or a new one) and one series. With
`--send`, the files are handed to the running station's sender for the configured destination of
that name (`handoff`) and the run waits for their delivery states. Exit status: 0 every file
converted (and delivered), 1 at least one file could not be converted or delivered (the summary
says why), 2 bad arguments or an unknown destination, 3 out of resources (disk full, the station
unreachable ...) — worth running again.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cinebridge_common.store import MediaStore, sha256_file
from pydicom.uid import UID

from . import convert, handoff, mwl
from .dicomize import IODS, Station, resolve_iod
from .errors import ConversionError, TransientFailure
from .rules import VIDEO_SYNTAXES
from .settings import ConverterSettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RESOURCES = 0, 1, 2, 3
STILL_MAGIC = (b"\xff\xd8", b"\x89PNG", b"BM", b"II*\x00", b"MM\x00*")
GIF_MAGIC = b"GIF8"
SOURCE = "cinebridge-convert"


@dataclass
class Outcome:
    source: Path
    written: list[Path]
    detail: str
    failed: bool = False
    transient: bool = False


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cinebridge-convert",
        description="Convert videos and images to DICOM Part 10 files (one study, one series).",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--patient-name", required=True, help="DICOM PN, e.g. Doe^Jane")
    p.add_argument("--patient-id", required=True)
    p.add_argument("--accession", default="", help="Accession Number (default: a timestamp)")
    p.add_argument(
        "--worklist-item",
        help="the Modality Worklist item, DICOM JSON (PS3.18 F.2), inline or a file path",
    )
    p.add_argument("--iod", default="standard", choices=["standard", *IODS], help="IOD profile")
    p.add_argument(
        "--transfer-syntax",
        default=VIDEO_SYNTAXES[2],
        choices=VIDEO_SYNTAXES,
        help="video transfer syntax (default H.264 High Profile / Level 4.1)",
    )
    p.add_argument("--modality", default="OT", help="Modality without a worklist item")
    p.add_argument("--station-name", default="CINEBRIDGE", help="Station Name (AE title)")
    p.add_argument(
        "--send",
        metavar="DESTINATION",
        help="hand the files to the running station's sender for this configured destination "
        "(CB_DATABASE_URL, CB_NATS_URL and CB_MEDIA_ROOT of the station) and wait for delivery",
    )
    p.add_argument(
        "--send-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds to wait for the delivery states (the station keeps retrying after it)",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="output directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        item = _worklist_item(args.worklist_item)
    except (OSError, ValueError) as exc:
        print(f"cinebridge-convert: --worklist-item: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = ConverterSettings()
    if args.send:
        # Checked before any work: a wrong name or a station that is down is said at once.
        try:
            asyncio.run(_destination(settings, args.send))
        except handoff.UnknownDestination as exc:
            print(f"cinebridge-convert: --send: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except handoff.StationUnavailable as exc:
            print(f"cinebridge-convert: --send: {exc}", file=sys.stderr)
            return EXIT_RESOURCES
    args.output.mkdir(parents=True, exist_ok=True)
    # A private work area beside the output (same file system: the final rename is atomic).
    store = MediaStore(args.output / f".cinebridge-convert-{uuid.uuid4().hex}")
    study = _study(args, item)
    try:
        attributes = mwl.study_attributes(
            study, default_modality=args.modality, uid_root=settings.org_uid_root
        )
    except (ValueError, KeyError, TypeError) as exc:
        print(f"cinebridge-convert: the worklist item cannot be read: {exc}", file=sys.stderr)
        return EXIT_USAGE
    station = Station(
        station_name=args.station_name,
        character_set="ISO_IR 192",
        iod=resolve_iod(args.iod, attributes.get("Modality")),
        anatomic_region=settings.anatomic_region(),
    )
    show = _Progress(sys.stderr, enabled=not args.quiet and sys.stderr.isatty())
    outcomes: list[Outcome] = []
    instance = 1
    try:
        for path in args.files:
            outcome = convert_file(
                path, args, attributes, station, store, settings, (1, instance), show
            )
            instance += len(outcome.written)
            outcomes.append(outcome)
            show.clear()
            _report(outcome, sys.stdout)
    finally:
        _cleanup(store)
    failed = [o for o in outcomes if o.failed]
    print(f"{len(outcomes) - len(failed)} converted, {len(failed)} failed -> {args.output}")
    status = EXIT_FAILED if failed else EXIT_OK
    if any(o.transient for o in failed):
        status = EXIT_RESOURCES
    written = [p for o in outcomes for p in o.written]
    if args.send and written:
        status = max(status, _send(settings, args, written, show))
    return status


async def _destination(settings: ConverterSettings, name: str) -> None:
    async with handoff.Station(settings) as station:
        await station.destination(name)


def _send(
    settings: ConverterSettings, args: argparse.Namespace, files: list[Path], show: _Progress
) -> int:
    """Deliver through the station's sender; one line per file and a summary line."""
    try:
        states = asyncio.run(_deliver(settings, args, files, show))
    except handoff.StationUnavailable as exc:
        show.clear()
        print(f"NOT SENT: {exc}")
        return EXIT_RESOURCES
    show.clear()
    sent = 0
    for path, (state, error) in states:
        if state in handoff.DELIVERED:
            sent += 1
            print(f"SENT   {path.name} -> {args.send} ({state})")
        elif state == "failed-permanent":
            print(f"FAILED {path.name} -> {args.send}: {error or 'refused'}")
        else:
            why = f": {error}" if error else ""
            print(
                f"WAITING {path.name} -> {args.send}: still {state} after "
                f"{args.send_timeout:g} s{why} (the station keeps trying)"
            )
    print(f"{sent} sent, {len(states) - sent} not sent -> {args.send}")
    return EXIT_OK if sent == len(states) else EXIT_FAILED


async def _deliver(
    settings: ConverterSettings, args: argparse.Namespace, files: list[Path], show: _Progress
) -> list[tuple[Path, tuple[str, str | None]]]:
    progress = show.bind(f"send to {args.send}")

    def report(states: dict[str, str]) -> None:
        done = sum(1 for s in states.values() if s in handoff.FINAL)
        progress(done / max(1, len(states)), "sending")

    async with handoff.Station(settings) as station:
        destination = await station.destination(args.send)
        ids = await station.hand_over(files, destination)
        states = await station.wait_delivered(ids, destination, args.send_timeout, report)
    return [(p, states.get(i, ("queued", None))) for p, i in zip(files, ids, strict=True)]


def convert_file(
    path: Path,
    args: argparse.Namespace,
    attributes: Any,
    station: Station,
    store: MediaStore,
    settings: ConverterSettings,
    numbers: tuple[int, int],
    show: _Progress,
) -> Outcome:
    """One file through `convert.prepare` and `convert.write`, as the service does it."""
    if not path.is_file():
        return Outcome(path, [], "no such file", failed=True)
    kind = _kind(path)
    media = convert.MediaInfo(
        id=str(uuid.uuid4()),
        kind=kind,
        path=path.resolve(),
        sha256=sha256_file(path),
        source=SOURCE,
        captured_at=dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC),
    )
    ts = "1.2.840.10008.1.2.4.50" if kind == "snapshot" else args.transfer_syntax
    progress = show.bind(path.name)
    try:
        prepared = convert.prepare(
            media, args.transfer_syntax, store, settings.limits(), progress, threading.Event()
        )
        try:
            built = convert.write(
                prepared,
                media,
                attributes,
                station,
                numbers,
                store,
                settings.org_uid_root,
                progress,
            )
        finally:
            prepared.cleanup()
    except ConversionError as exc:
        return Outcome(path, [], exc.reason, failed=True)
    except (TransientFailure, OSError) as exc:
        return Outcome(path, [], f"out of resources: {exc}", failed=True, transient=True)
    written = [_place(b.temp, path, b.part, len(built), args.output) for b in built]
    derived = any(p.derivation for p in prepared.pixels)
    frames = sum(b.frames or 0 for b in built)
    what = f"{frames} frames" if kind == "recording" else "still"
    how = "re-encoded" if derived else "not re-encoded"
    iod = UID(built[0].sop_class_uid).name
    return Outcome(path, written, f"{iod}, {what}, {how}, {UID(ts).name}")


def _place(temp: Path, source: Path, part: int, parts: int, out: Path) -> Path:
    stem = source.stem if parts == 1 else f"{source.stem}-part{part}"
    target = out / f"{stem}.dcm"
    n = 1
    while target.exists():
        n += 1
        target = out / f"{stem}-{n}.dcm"
    temp.rename(target)
    return target


def _report(outcome: Outcome, out: TextIO) -> None:
    if outcome.failed:
        print(f"FAILED {outcome.source}: {outcome.detail}", file=out)
        return
    names = ", ".join(p.name for p in outcome.written)
    print(f"OK     {outcome.source} -> {names} ({outcome.detail})", file=out)


def _cleanup(store: MediaStore) -> None:
    shutil.rmtree(store.root, ignore_errors=True)


def _kind(path: Path) -> str:
    """What a file is by its content, never its name: JPEG, PNG, BMP, TIFF and a one-picture GIF
    are stills; an animated GIF and anything else go to FFmpeg as a recording."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(GIF_MAGIC):
        return "recording" if _animated(path) else "snapshot"
    return "snapshot" if head.startswith(STILL_MAGIC) else "recording"


def _animated(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return bool(getattr(img, "is_animated", False))
    except (UnidentifiedImageError, OSError):
        return False  # the still path says why it cannot be read


def _worklist_item(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    text = value if value.lstrip().startswith("{") else Path(value).read_text()
    item = json.loads(text)
    if not isinstance(item, dict):
        raise ValueError("a DICOM JSON object is expected")
    return item


def _study(args: argparse.Namespace, item: dict[str, Any] | None) -> mwl.StudyInfo:
    now = dt.datetime.now(dt.UTC)
    scheduled = mwl.worklist_dataset(item)
    mwl_uid = str(scheduled.get("StudyInstanceUID", "")) if scheduled is not None else ""
    return mwl.StudyInfo(
        id=str(uuid.uuid4()),
        study_instance_uid=mwl_uid,
        origin="worklist" if item else "unscheduled",
        patient_name=args.patient_name,
        patient_id=args.patient_id,
        patient_birth_date="",
        patient_sex="",
        accession_number=args.accession,
        study_id="",
        study_description="",
        referring_physician="",
        study_date=now.astimezone().strftime("%Y%m%d"),
        study_time=now.astimezone().strftime("%H%M%S"),
        worklist_item=item,
        edited=False,
        created_at=now,
    )


class _Progress:
    """One status line on a terminal, redrawn at most five times a second."""

    def __init__(self, out: TextIO, *, enabled: bool) -> None:
        self.out, self.enabled = out, enabled
        self.last = 0.0

    def bind(self, name: str) -> convert.Progress:
        def report(fraction: float, stage: str) -> None:
            now = time.monotonic()
            if not self.enabled or (now - self.last < 0.2 and fraction < 1.0):
                return
            self.last = now
            filled = int(max(0.0, min(1.0, fraction)) * 30)
            bar = "#" * filled + "." * (30 - filled)
            self.out.write(f"\r{name[:30]:30} {stage:9} [{bar}] {fraction * 100:5.1f}%")
            self.out.flush()

        return report

    def clear(self) -> None:
        if self.enabled:
            self.out.write("\r" + " " * 85 + "\r")
            self.out.flush()


if __name__ == "__main__":
    sys.exit(main())
