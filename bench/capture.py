"""Capture benchmark: CineBridge's recording pipeline against the ffmpeg command line.

Prints, in one run (each side measured alone, one after the other, on the same machine):
1. a 1080p30 test pattern recorded for --seconds (default 300) with the same encoder settings:
   frames dropped, encoded fps, CPU seconds per video second and peak RSS, and the ratio;
2. the same for pass-through recording of a network H.264 source (a local ffmpeg serving
   UDP MPEG-TS on loopback) against `ffmpeg -c copy`;
3. snapshot latency (request over NATS → JPEG fsync'd and registered) p50/p95, through the real
   service with embedded NATS and PostgreSQL, while recording 1080p30.

    .venv/bin/python bench/capture.py [--seconds 300] [--snapshots 60] [--skip-passthrough]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SOURCE = "testsrc2=size=1920x1080:rate=30"
PRESET, TUNE, PARAMS, CRF = "ultrafast", "zerolatency", "8x8dct=1", 23


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run `cmd` to completion; (CPU seconds, peak RSS in MB, stdout) from wait4's rusage."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with {proc.returncode}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, out


def probe_frames(path: Path) -> tuple[int, float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, first, end = 0, None, None
        for p in container.demux(stream):
            if p.size and p.pts is not None:
                frames += 1
                first = p.pts if first is None else min(first, p.pts)
                end = max(end or 0, p.pts + (p.duration or 0))
        return frames, float(((end or 0) - (first or 0)) * (stream.time_base or 0))


# -- child: CineBridge's pipeline alone ------------------------------------------------------
def child(url: str, seconds: float, out: Path, keyframes_only: bool) -> None:
    from cinebridge_capture.encoding import EncoderSettings
    from cinebridge_capture.pipeline import PipelineOptions, SourcePipeline
    from cinebridge_capture.settings import SourceConfig

    options = PipelineOptions(
        passthrough_decode_keyframes=keyframes_only,
        encoder=EncoderSettings(preset=PRESET, tune=TUNE, x264_params=PARAMS, crf=CRF),
    )
    pipeline = SourcePipeline(SourceConfig(name="bench", url=url), options, "h264", lambda *a: None)
    pipeline.start()
    deadline = time.monotonic() + 20
    while not pipeline.signal:
        if time.monotonic() > deadline:
            raise SystemExit("no signal")
        time.sleep(0.05)
    pipeline.start_recording("bench", out, "h264")
    time.sleep(seconds)
    finished = pipeline.stop_recording()
    pipeline.close()
    assert finished is not None
    print(
        json.dumps(
            {
                "frames": finished.frames,
                "duration": finished.duration_s,
                "dropped": pipeline.stats.dropped,
                "passthrough": finished.passthrough,
                "frames_in": pipeline.stats.frames_in,
            }
        )
    )


def cinebridge_side(
    url: str, seconds: float, out: Path, keyframes_only: bool = False
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", url, "--seconds", str(seconds), "--out", str(out)]
    if keyframes_only:
        cmd.append("--keyframes-only")
    t0 = time.monotonic()
    cpu, rss, stdout = run_measured(cmd)
    wall = time.monotonic() - t0
    stats = json.loads(stdout.strip().splitlines()[-1])
    return {**stats, "cpu": cpu, "rss": rss, "wall": wall}


def ffmpeg_encode_side(seconds: float, out: Path) -> dict[str, Any]:
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-re",
        "-f",
        "lavfi",
        "-i",
        SOURCE,
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        PRESET,
        "-tune",
        TUNE,
        "-profile:v",
        "high",
        "-level",
        "4.1",
        "-x264-params",
        PARAMS,
        "-crf",
        str(CRF),
        "-g",
        "30",
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "frag_keyframe+empty_moov+default_base_moof",
        str(out),
    ]
    cpu, rss, _ = run_measured(cmd)
    frames, duration = probe_frames(out)
    return {"frames": frames, "duration": duration, "dropped": 0, "cpu": cpu, "rss": rss}


def ffmpeg_copy_side(url: str, seconds: float, out: Path) -> dict[str, Any]:
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-i",
        url,
        "-t",
        str(seconds),
        "-c",
        "copy",
        "-movflags",
        "frag_keyframe+empty_moov+default_base_moof",
        str(out),
    ]
    cpu, rss, _ = run_measured(cmd)
    frames, duration = probe_frames(out)
    return {"frames": frames, "duration": duration, "dropped": 0, "cpu": cpu, "rss": rss}


def report(title: str, cb: dict[str, Any], ff: dict[str, Any], peer: str) -> None:
    cb_cpu = cb["cpu"] / max(cb["duration"], 1e-9)
    ff_cpu = ff["cpu"] / max(ff["duration"], 1e-9)
    print(f"\n== {title}")
    print(f"{'':24}{'CineBridge':>14}{peer:>22}")
    print(f"{'video seconds':24}{cb['duration']:>14.2f}{ff['duration']:>22.2f}")
    print(f"{'frames':24}{cb['frames']:>14}{ff['frames']:>22}")
    print(f"{'frames dropped':24}{cb['dropped']:>14}{ff['dropped']:>22}")
    print(
        f"{'encoded fps':24}{cb['frames'] / cb['duration']:>14.2f}"
        f"{ff['frames'] / ff['duration']:>22.2f}"
    )
    print(f"{'CPU s per video s':24}{cb_cpu:>14.3f}{ff_cpu:>22.3f}")
    print(f"{'peak RSS MB':24}{cb['rss']:>14}{ff['rss']:>22}")
    print(
        f"ratio CPU CineBridge/{peer.strip()}: {cb_cpu / ff_cpu:.2f}   "
        f"(pass-through: {cb.get('passthrough')})"
    )


# -- snapshot latency through the real service -----------------------------------------------
async def snapshot_latency(count: int, work: Path) -> list[float]:
    from cinebridge_common.bus import Bus
    from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres, free_port
    from cinebridge_common.messages.capture import (
        CaptureCommand,
        CaptureCommandReply,
        CaptureStatusReply,
        CaptureStatusRequest,
    )

    nats, pg = EmbeddedNats(work / "nats"), EmbeddedPostgres(work / "pg")
    nats.start()
    pg.start()
    proc = None
    try:
        dsn = pg.dsn
        env = dict(
            os.environ,
            CB_NATS_URL=nats.url,
            CB_DATABASE_URL=dsn,
            CB_MEDIA_ROOT=str(work / "media"),
            CB_CAPTURE_ROOM="bench",
            CB_CAPTURE_SOURCES=json.dumps([{"name": "hd", "url": f"lavfi:{SOURCE}"}]),
            CB_CAPTURE_PREVIEW_PORT=str(free_port()),
            CB_LOG_LEVEL=os.environ.get("CB_LOG_LEVEL", "WARNING"),
            CB_CAPTURE_DISK_RESERVE_BYTES="0",
        )
        proc = subprocess.Popen([sys.executable, "-m", "cinebridge_capture"], env=env)
        bus = await Bus.connect(nats.url, "bench")
        deadline = time.monotonic() + 60
        while True:
            try:
                status = await bus.request(
                    CaptureStatusRequest(room="bench"), CaptureStatusReply, 2
                )
                if status.sources and status.sources[0].signal:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("capture service did not come up")
            await asyncio.sleep(0.3)
        start = await bus.request(
            CaptureCommand(room="bench", source="hd", action="record_start"),
            CaptureCommandReply,
            20,
        )
        assert start.ok, start.error
        latencies = []
        for _ in range(count):
            t0 = time.perf_counter()
            reply = await bus.request(
                CaptureCommand(room="bench", source="hd", action="snapshot"),
                CaptureCommandReply,
                10,
            )
            latencies.append(time.perf_counter() - t0)
            assert reply.ok, reply.error
            await asyncio.sleep(0.2)
        await bus.request(
            CaptureCommand(room="bench", source="hd", action="record_stop"), CaptureCommandReply, 20
        )
        await bus.close()
        return latencies
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        pg.stop("immediate")
        nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--snapshots", type=int, default=60)
    parser.add_argument("--skip-passthrough", action="store_true")
    parser.add_argument("--only-snapshots", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--out")
    parser.add_argument("--keyframes-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds, Path(args.out), args.keyframes_only)
        return
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is not installed")
    work = Path(tempfile.mkdtemp(prefix="cb-bench-capture-"))
    try:
        print(
            f"capture bench: {SOURCE}, {args.seconds:g} s, libx264 {PRESET}/{TUNE} "
            f"{PARAMS} crf {CRF}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
        )
        if not args.only_snapshots:
            cb = cinebridge_side(f"lavfi:{SOURCE}", args.seconds, work / "cb.mp4")
            ff = ffmpeg_encode_side(args.seconds, work / "ff.mp4")
            report("1080p30 recording, encoded", cb, ff, "ffmpeg -re (same x264)")
        if not (args.skip_passthrough or args.only_snapshots):
            passthrough(args.seconds, work)
        lat = asyncio.run(snapshot_latency(args.snapshots, work))
        q = statistics.quantiles(lat, n=20)
        print(
            f"\n== snapshot latency while recording 1080p30 ({len(lat)} snapshots, request -> "
            f"JPEG fsync'd + registered): p50 {statistics.median(lat) * 1000:.1f} ms, "
            f"p95 {q[18] * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def passthrough(seconds: float, work: Path) -> None:
    from cinebridge_common.embedded import free_port

    port = free_port()
    sender = subprocess.Popen(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            SOURCE,
            "-c:v",
            "libx264",
            "-preset",
            PRESET,
            "-tune",
            TUNE,
            "-profile:v",
            "high",
            "-x264-params",
            PARAMS,
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "mpegts",
            f"udp://127.0.0.1:{port}?pkt_size=1316",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"udp://127.0.0.1:{port}"
        cb = cinebridge_side(url, seconds, work / "cb-pt.mp4")
        cb_key = cinebridge_side(url, seconds, work / "cb-pt-key.mp4", keyframes_only=True)
        ff = ffmpeg_copy_side(
            url + "?fifo_size=1000000&overrun_nonfatal=1", seconds, work / "ff-pt.mp4"
        )
    finally:
        sender.terminate()
        sender.wait(10)
    report("network H.264 1080p30 (UDP MPEG-TS), pass-through", cb, ff, "ffmpeg -c copy")
    report("the same, CB_CAPTURE_PASSTHROUGH_DECODE=keyframes", cb_key, ff, "ffmpeg -c copy")
    print(
        "note: CineBridge also decodes every frame (snapshots and preview need the picture);"
        " ffmpeg -c copy does not."
    )


if __name__ == "__main__":
    main()
