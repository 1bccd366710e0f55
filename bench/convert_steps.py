"""Where one conversion's time goes, step by step and thread by thread.

Run: `.venv/bin/python bench/convert_steps.py RECORDING [--ts-uid UID]` (the recordings of
bench/convert.py serve: `$CB_BENCH_DIR/recording-10min.mp4`, `-5min.mp4`, `.ts`).

Converts RECORDING once as the service does (prepare, then write) with the converter's steps
wrapped: for each (thread, step) the wall seconds and the thread's own CPU seconds
(`time.thread_time`), and the span of each long step from the start, so it shows whether the
decode check, the copy and the hashes run side by side. Per-block steps (read, write, the two
SHA-256) are summed. CPU seconds hardly move with the machine's load; wall seconds do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cinebridge_common.store import MediaStore, sha256_file
from cinebridge_converter import convert, instance_write, mwl, part10
from cinebridge_converter.dicomize import Station
from report import Figures, add_json_flag

WORK = Path(os.environ.get("CB_BENCH_DIR", "/tmp/cb-bench-convert"))
_lock = threading.Lock()
_totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
_spans: list[tuple[str, str, float, float, float]] = []
_t0 = time.perf_counter()


def _record(step: str, start: float, cpu: float, span: bool) -> None:
    end, thread = time.perf_counter(), threading.current_thread().name
    with _lock:
        total = _totals[(thread, step)]
        total[0] += end - start
        total[1] += cpu
        total[2] += 1
        if span:
            _spans.append((thread, step, start - _t0, end - _t0, cpu))


def timed(step: str, fn: Callable[..., Any], span: bool = True) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _record(step, start, time.thread_time() - cpu, span)

    return wrapper


class _TimedHash:
    """A SHA-256 whose updates are timed (the first made per file is the output's)."""

    made = 0

    def __init__(self) -> None:
        _TimedHash.made += 1
        self.step = "output SHA-256" if _TimedHash.made % 2 else "source SHA-256"
        self.inner = hashlib.sha256()
        self.update = timed(self.step, self.inner.update, span=False)

    def hexdigest(self) -> str:
        return self.inner.hexdigest()


def _first_hash_is_the_output(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _TimedHash.made = 0
        return fn(*args, **kwargs)

    return wrapper


def instrument() -> None:
    convert._probe = timed("probe", convert._probe)  # type: ignore[attr-defined]
    instance_write.check_playable = timed("decode check", instance_write.check_playable)
    instance_write._write_all = timed("write (header, copy, sync)", instance_write._write_all)
    part10.header_bytes = timed("header", part10.header_bytes)
    instance_write.write_encapsulated = _first_hash_is_the_output(instance_write.write_encapsulated)
    part10._copy = timed("copy, page cache", part10._copy)
    part10._copy_direct = timed("copy, direct I/O", part10._copy_direct)
    part10._pwrite_all = timed("pwrite (direct)", part10._pwrite_all, span=False)
    part10.start_writeback = timed("sync_file_range", part10.start_writeback, span=False)
    part10.hashlib = type("hashes", (), {"sha256": _TimedHash})  # type: ignore[assignment]
    os.fdatasync = timed("fdatasync", os.fdatasync)


def convert_once(source: Path, ts_uid: str) -> tuple[float, float]:
    store = MediaStore(WORK / "store")
    media = convert.MediaInfo(
        id="steps",
        kind="recording",
        path=source,
        sha256=sha256_file(source),  # known from the media row in the service: not timed
        source="bench",
        captured_at=dt.datetime.now(dt.UTC),
    )
    study = mwl.StudyInfo(
        id="6f1c1e36-2f0c-4f43-9a55-6c3b0b0d8a01",
        study_instance_uid="2.25.1",
        origin="local",
        patient_name="Bench^Mark",
        patient_id="B1",
        patient_birth_date="",
        patient_sex="",
        accession_number="",
        study_id="",
        study_description="",
        referring_physician="",
        study_date="",
        study_time="",
        worklist_item=None,
        edited=False,
        created_at=dt.datetime.now(dt.UTC),
    )
    station = Station("BENCH", "ISO_IR 192", "sc", ("38266002", "SCT", "Entire body"))
    os.sync()  # earlier runs' dirty pages must not be written back on this run's clock
    global _t0
    _t0, cpu = time.perf_counter(), time.process_time()
    prepared = timed("prepare", convert.prepare)(
        media, ts_uid, store, convert.Limits(), lambda f, s: None, threading.Event()
    )
    try:
        ds = mwl.study_attributes(study, default_modality="OT", uid_root="")
        built = timed("write", convert.write)(
            prepared, media, ds, station, (1, 1), store, "", lambda f, s: None
        )
    finally:
        prepared.cleanup()
    seconds, cpu = time.perf_counter() - _t0, time.process_time() - cpu
    for item in built:
        item.temp.unlink()
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", type=Path)
    parser.add_argument("--ts-uid", default="1.2.840.10008.1.2.4.102")
    add_json_flag(parser)
    args = parser.parse_args()
    figures = Figures("convert_steps")
    instrument()
    seconds, cpu = convert_once(args.recording, args.ts_uid)
    size_mb = args.recording.stat().st_size / 1e6
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.recording.name} ({size_mb:.0f} MB): {seconds:.2f} s wall, {cpu:.2f} CPU s")
    print(f"{os.cpu_count()} CPUs, load average {load}")
    print(f"{'thread':16} {'step':28} {'wall s':>7} {'CPU s':>7} {'calls':>6}")
    for (thread, step), (wall, used, calls) in sorted(_totals.items()):
        print(f"{thread[:16]:16} {step:28} {wall:7.3f} {used:7.3f} {calls:6.0f}")
    print("spans from the start (s):")
    for thread, step, start, end, used in sorted(_spans, key=lambda s: s[2]):
        print(f"  {thread[:16]:16} {step:28} {start:7.3f} .. {end:7.3f}  CPU {used:.3f}")
    figures.put("recording", {"name": args.recording.name, "mb": size_mb})
    figures.put("total", {"wall_s": seconds, "cpu_s": cpu})
    for (thread, step), (wall, used, calls) in sorted(_totals.items()):
        figures.put("steps", f"{thread}/{step}", {"wall_s": wall, "cpu_s": used, "calls": calls})
    figures.emit(args.json)


if __name__ == "__main__":
    main()
