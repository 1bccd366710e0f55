"""Benchmark of the converter against its physical floor and the ffmpeg command line.

Run: `.venv/bin/python bench/convert.py [--minutes 10] [--transcode-seconds 30]`

1. Remux path, a 1080p30 H.264 MP4 recording (`--minutes` long, made by concatenating a 10 s
   test pattern with `ffmpeg -c copy`):
   - `cp` of the file (the floor), `ffmpeg -c copy` to MPEG-TS and to MP4 (the peers);
   - CineBridge encapsulating the conforming MP4 as it is (what capture recordings take), and
     CineBridge remuxing the same stream from MPEG-TS into MP4 (what a TS/MOV source takes),
     each in a child process: wall time, time of the conversion alone, and peak RSS.
2. Transcode path: a 1080p30 MJPEG source to H.264 High@4.1 with libx264 `veryfast` CRF 20,
   CineBridge (PyAV) against the ffmpeg command line with the same encoder and settings.
Figures are printed with the ratios; the machine is shared, so only the ratios matter.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

WORK = Path(os.environ.get("CB_BENCH_DIR", "/tmp/cb-bench-convert"))
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def run_child(args: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB, stdout) of a child process, from wait4's rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed: {err[-2000:]}")
    return wall, usage.ru_maxrss // 1024, out


def ffmpeg(*args: str) -> list[str]:
    return [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args]


def make_sources(minutes: float, transcode_s: int) -> tuple[Path, Path, Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    piece = WORK / "piece-10s.mp4"
    if not piece.exists():
        subprocess.run(
            ffmpeg(
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1920x1080:rate=30",
                "-t",
                "10",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-profile:v",
                "high",
                "-level",
                "4.1",
                "-b:v",
                "10M",
                "-g",
                "60",
                "-pix_fmt",
                "yuv420p",
                str(piece),
            ),
            check=True,
        )
    long = WORK / f"recording-{minutes:g}min.mp4"
    if not long.exists():
        listing = WORK / "concat.txt"
        listing.write_text("".join(f"file '{piece}'\n" for _ in range(int(minutes * 6))))
        subprocess.run(
            ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(long)),
            check=True,
        )
    as_ts = WORK / f"recording-{minutes:g}min.ts"
    if not as_ts.exists():
        subprocess.run(
            ffmpeg("-i", str(long), "-c", "copy", "-f", "mpegts", str(as_ts)), check=True
        )
    mjpeg = WORK / f"mjpeg-{transcode_s}s.avi"
    if not mjpeg.exists():
        subprocess.run(
            ffmpeg(
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1920x1080:rate=30",
                "-t",
                str(transcode_s),
                "-c:v",
                "mjpeg",
                "-q:v",
                "3",
                "-pix_fmt",
                "yuvj420p",
                str(mjpeg),
            ),
            check=True,
        )
    return long, as_ts, mjpeg


def child_convert(source: str, kind: str) -> None:
    """In a child: convert like the service does and print the conversion's own timing."""
    from cinebridge_common.store import MediaStore, sha256_file
    from cinebridge_converter import convert, mwl
    from cinebridge_converter.dicomize import Station

    src = Path(source)
    store = MediaStore(WORK / "store")
    sha = sha256_file(src)  # known from the media row in the service: not timed
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
    media = convert.MediaInfo(
        id=kind,
        kind="recording",
        path=src,
        sha256=sha,
        source="bench",
        captured_at=dt.datetime.now(dt.UTC),
    )
    start = time.perf_counter()
    prepared = convert.prepare(
        media,
        "1.2.840.10008.1.2.4.102",
        store,
        convert.Limits(),
        lambda f, s: None,
        threading.Event(),
    )
    try:
        ds = mwl.study_attributes(study, default_modality="OT", uid_root="")
        station = Station("BENCH", "ISO_IR 192", "sc", ("38266002", "SCT", "Entire body"))
        built = convert.write(prepared, media, ds, station, (1, 1), store, "", lambda f, s: None)
    finally:
        prepared.cleanup()
    seconds = time.perf_counter() - start
    for item in built:
        item.temp.unlink()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "verbatim": prepared.verbatim,
                "bytes": sum(b.size for b in built),
                "parts": len(built),
            }
        )
    )


def remux_section(long: Path, as_ts: Path) -> None:
    size_mb = long.stat().st_size / 1e6
    print(f"\n== Remux path: {long.name} ({size_mb:.0f} MB, 1080p30 H.264) ==")
    rows: list[tuple[str, float, int, float | None]] = []
    copy = WORK / "copy.mp4"
    cp_wall, cp_rss, _ = run_child(["cp", str(long), str(copy)])
    copy.unlink()
    rows.append(("cp (floor)", cp_wall, cp_rss, None))
    for name, args in [
        (
            "ffmpeg -c copy -> MPEG-TS",
            ffmpeg("-i", str(long), "-c", "copy", "-f", "mpegts", str(WORK / "peer.ts")),
        ),
        (
            "ffmpeg -c copy TS -> MP4",
            ffmpeg("-i", str(as_ts), "-c", "copy", "-f", "mp4", str(WORK / "peer.mp4")),
        ),
    ]:
        wall, rss, _ = run_child(args)
        rows.append((name, wall, rss, None))
    for name, source in [
        ("CineBridge MP4 -> DICOM (as is)", long),
        ("CineBridge TS -> MP4 -> DICOM", as_ts),
    ]:
        wall, rss, out = run_child([sys.executable, __file__, "--child", str(source), name[:8]])
        rows.append((name, wall, rss, json.loads(out)["seconds"]))
    for path in (WORK / "peer.ts", WORK / "peer.mp4"):
        path.unlink(missing_ok=True)
    print(f"{'':34} {'wall s':>8} {'work s':>8} {'peak RSS MB':>12} {'x cp':>7}")
    for name, wall, rss, work in rows:
        ratio = (work or wall) / cp_wall
        work_s = f"{work:8.2f}" if work is not None else f"{'':8}"
        print(f"{name:34} {wall:8.2f} {work_s} {rss:12d} {ratio:7.2f}")
    print(
        "(work s: the conversion alone, without interpreter start and imports; "
        "targets: within 3x of cp, RSS < 150 MB)"
    )


def transcode_section(mjpeg: Path, seconds: int) -> None:
    print(f"\n== Transcode path: {mjpeg.name} ({seconds} s 1080p30 MJPEG) -> H.264 High@4.1 ==")
    peer_args = ffmpeg(
        "-i",
        str(mjpeg),
        "-an",
        "-vf",
        "fps=30/1,scale=1920:1080,setsar=1,format=yuv420p",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-profile:v",
        "high",
        "-level",
        "4.1",
        "-crf",
        "20",
        "-x264-params",
        "keyint=60:min-keyint=1:log-level=error",
        "-f",
        "mp4",
        str(WORK / "peer-x264.mp4"),
    )
    peer_wall, peer_rss, _ = run_child(peer_args)
    (WORK / "peer-x264.mp4").unlink(missing_ok=True)
    _, rss, out = run_child([sys.executable, __file__, "--child", str(mjpeg), "transcode"])
    work = json.loads(out)["seconds"]
    print(f"{'':34} {'wall s':>8} {'x realtime':>11} {'peak RSS MB':>12}")
    print(
        f"{'ffmpeg libx264 veryfast':34} {peer_wall:8.2f} {seconds / peer_wall:11.2f} "
        f"{peer_rss:12d}"
    )
    print(f"{'CineBridge (PyAV libx264 veryfast)':34} {work:8.2f} {seconds / work:11.2f} {rss:12d}")
    print(f"speed relative to ffmpeg: {peer_wall / work:.2f} (target >= 0.9)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--transcode-seconds", type=int, default=30)
    parser.add_argument("--child", nargs=2, metavar=("SOURCE", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_convert(*args.child)
        return
    long, as_ts, mjpeg = make_sources(args.minutes, args.transcode_seconds)
    remux_section(long, as_ts)
    transcode_section(mjpeg, args.transcode_seconds)


if __name__ == "__main__":
    main()
