"""Capture benchmark: CineBridge's recording pipeline against the ffmpeg command line.

Prints, in one run (each side measured alone, one after the other, on the same machine):
1. a 1080p30 test pattern recorded for --seconds (default 300) with the same encoder settings:
   frames dropped, encoded fps, CPU seconds per video second and peak RSS, and the ratio;
2. the same for pass-through recording of a network H.264 source (a local ffmpeg serving
   UDP MPEG-TS on loopback) against `ffmpeg -c copy`;
3. snapshot latency (request over NATS → JPEG fsync'd and registered) p50/p95, through the real
   service with embedded NATS and PostgreSQL, while recording 1080p30 (bench/capture_snapshots.py).

    .venv/bin/python bench/capture.py [--seconds 300] [--snapshots 60] [--skip-passthrough]
                                      [--only-encode | --only-passthrough] [--load N]

`--load N` runs N busy-looping processes beside every measurement (a loaded shared box, as when
other test suites run): dropped frames and snapshot latency under contention.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from capture_snapshots import print_latency, snapshot_latency
from report import Figures, add_json_flag

SOURCE = "testsrc2=size=1920x1080:rate=30"
PRESET, TUNE, PARAMS, CRF = "ultrafast", "zerolatency", "8x8dct=1", 23


def run_measured(
    cmd: list[str], window: tuple[float, float] | None = None
) -> tuple[float, int, str, float | None]:
    """Run `cmd` to completion; (CPU seconds, peak RSS in MB, stdout) from wait4's rusage, and
    with `window` = (start, length) in seconds also the CPU seconds it used in that window
    (sampled from outside: its steady state, without start-up, like the children's own
    `steady_cpu`)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    samples: list[float | None] = []

    def sample() -> None:
        assert window is not None
        time.sleep(window[0])
        samples.append(task_cpu(proc.pid))
        time.sleep(window[1])
        samples.append(task_cpu(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True) if window else None
    if sampler is not None:
        sampler.start()
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with {proc.returncode}")
    steady = None
    if sampler is not None:
        sampler.join()
        if len(samples) == 2 and None not in samples:
            steady = samples[1] - samples[0]  # type: ignore[operator]
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, out, steady


def task_cpu(pid: int) -> float | None:
    """CPU seconds of every thread of `pid` so far (scheduler nanoseconds), None once gone."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    total += int(fh.read().split()[0])
    except FileNotFoundError:
        return None
    return total / 1e9


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


def process_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- child: CineBridge's pipeline alone ------------------------------------------------------
def child(url: str, seconds: float, out: Path, decode: str, viewer: bool, dashboard: bool) -> None:
    from cinebridge_capture.encoding import EncoderSettings
    from cinebridge_capture.pipeline import SourcePipeline
    from cinebridge_capture.pipeline_types import PipelineOptions
    from cinebridge_capture.preview import PreviewWorker
    from cinebridge_capture.settings import SourceConfig

    options = PipelineOptions(
        passthrough_decode=decode,  # type: ignore[arg-type]
        encoder=EncoderSettings(preset=PRESET, tune=TUNE, x264_params=PARAMS, crf=CRF),
    )
    pipeline = SourcePipeline(SourceConfig(name="bench", url=url), options, "h264", lambda *a: None)
    # As in the service: the preview worker, (--viewer) one live preview watcher, (--dashboard)
    # a dashboard asking for the thumbnail every 5 s (else no thumbnail is ever made).
    preview = PreviewWorker({"bench": pipeline}, 5.0, 640, 70, 5.0)
    preview.viewers["bench"] = 1 if viewer else 0
    pipeline.start()
    preview.start()
    deadline = time.monotonic() + 20
    while not pipeline.signal:
        if time.monotonic() > deadline:
            raise SystemExit("no signal")
        time.sleep(0.05)
    cpu0 = process_cpu()
    pipeline.start_recording("bench", out, "h264")
    max_lag, until, poll = 0.0, time.monotonic() + seconds, 0.0
    while (left := until - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))
        max_lag = max(max_lag, pipeline.stats.encoder_lag_s)
        if dashboard and time.monotonic() >= poll:
            preview.request_thumbnail("bench")
            poll = time.monotonic() + 5.0
    finished = pipeline.stop_recording()
    steady = process_cpu() - cpu0
    preview.close()
    pipeline.close()
    assert finished is not None
    print(
        json.dumps(
            {
                "frames": finished.frames,
                "duration": finished.duration_s,
                "dropped": pipeline.stats.dropped,
                "queue_peak": pipeline.stats.queue_peak,
                "max_lag": max_lag,
                "passthrough": finished.passthrough,
                "frames_in": pipeline.stats.frames_in,
                "thumbnails": preview.thumbnails["bench"].seq,
                "previews": preview.previews["bench"].seq,
                "steady_cpu": steady,
            }
        )
    )


def cinebridge_side(
    url: str,
    seconds: float,
    out: Path,
    decode: str = "on-demand",
    viewer: bool = False,
    dashboard: bool = False,
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", url, "--seconds", str(seconds), "--out", str(out)]
    cmd += ["--decode", decode] + (["--viewer"] if viewer else [])
    cmd += ["--dashboard"] if dashboard else []
    t0 = time.monotonic()
    cpu, rss, stdout, _ = run_measured(cmd)
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
    return ffmpeg_measured(cmd, seconds, out)


def ffmpeg_measured(cmd: list[str], seconds: float, out: Path) -> dict[str, Any]:
    # Its steady state: from 3 s in (probed, writing) to 2 s before its end, per wall second.
    length = max(seconds - 5.0, 1.0)
    cpu, rss, _, steady = run_measured(cmd, window=(3.0, length))
    frames, duration = probe_frames(out)
    result = {"frames": frames, "duration": duration, "dropped": 0, "cpu": cpu, "rss": rss}
    if steady is not None:
        result["steady_per_s"] = steady / length
    return result


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
    return ffmpeg_measured(cmd, seconds, out)


#: The figures of this run, for --json (docs/benchmarks.md).
FIGURES = Figures("capture")


def side_figures(m: dict[str, Any], cpu_per_s: float) -> dict[str, Any]:
    out = {
        "video_s": m["duration"],
        "frames": m["frames"],
        "dropped": m["dropped"],
        "encoded_fps": m["frames"] / m["duration"],
        "cpu_s_per_video_s": cpu_per_s,
        "peak_rss_mb": m["rss"],
    }
    for key in ("queue_peak", "thumbnails", "previews"):
        if key in m:
            out[key] = m[key]
    if "max_lag" in m:
        out["encoder_lag_max_s"] = m["max_lag"]
    return out


def report(title: str, cb: dict[str, Any], ff: dict[str, Any], peer: str, key: str) -> None:
    cb_cpu = cb["cpu"] / max(cb["duration"], 1e-9)
    ff_cpu = ff["cpu"] / max(ff["duration"], 1e-9)
    FIGURES.put(key, "cinebridge", side_figures(cb, cb_cpu))
    FIGURES.put(key, "peer", side_figures(ff, ff_cpu))
    FIGURES.put(key, "passthrough", bool(cb.get("passthrough")))
    FIGURES.put(key, "ratio_cpu", cb_cpu / ff_cpu)
    print(f"\n== {title}")
    print(f"{'':24}{'CineBridge':>14}  {peer:>26}")
    print(f"{'video seconds':24}{cb['duration']:>14.2f}{ff['duration']:>28.2f}")
    print(f"{'frames':24}{cb['frames']:>14}{ff['frames']:>28}")
    print(f"{'frames dropped':24}{cb['dropped']:>14}{ff['dropped']:>28}")
    print(
        f"{'encoded fps':24}{cb['frames'] / cb['duration']:>14.2f}"
        f"{ff['frames'] / ff['duration']:>28.2f}"
    )
    print(f"{'CPU s per video s':24}{cb_cpu:>14.3f}{ff_cpu:>28.3f}")
    print(f"{'peak RSS MB':24}{cb['rss']:>14}{ff['rss']:>28}")
    print(
        f"ratio CPU CineBridge/{peer.strip()}: {cb_cpu / ff_cpu:.2f}   "
        f"(pass-through: {cb.get('passthrough')})"
    )
    if not cb.get("passthrough") and "queue_peak" in cb:
        print(
            f"encoder queue peak {cb['queue_peak']} frames, encoder lag max {cb['max_lag']:.2f} s"
        )
    if "steady_cpu" in cb:
        # Without start-up (the interpreter's imports, ~0.7 CPU s once per process and day;
        # ffmpeg's probing): what each further second of recording costs, on both sides.
        steady = cb["steady_cpu"] / max(cb["duration"], 1e-9)
        ff_steady = ff.get("steady_per_s")
        versus = (
            f"{ff_steady:.4f}, ratio {steady / ff_steady:.2f}"
            if ff_steady
            else f"n/a; ratio to its whole run {steady / ff_cpu:.2f}"
        )
        print(f"steady state, CPU s per video s: CineBridge {steady:.4f}, {peer.strip()} {versus}")
        FIGURES.put(key, "cinebridge", "steady_cpu_s_per_video_s", steady)
        if ff_steady:
            FIGURES.put(key, "peer", "steady_cpu_s_per_video_s", ff_steady)
            FIGURES.put(key, "ratio_steady_cpu", steady / ff_steady)
        else:
            FIGURES.put(key, "ratio_steady_cpu_to_peer_whole_run", steady / ff_cpu)


@contextlib.contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--snapshots", type=int, default=60)
    parser.add_argument("--skip-passthrough", action="store_true")
    parser.add_argument("--only-snapshots", action="store_true")
    parser.add_argument("--only-encode", action="store_true")
    parser.add_argument("--only-passthrough", action="store_true")
    parser.add_argument("--load", type=int, default=0, help="busy processes beside the runs")
    parser.add_argument("--child")
    parser.add_argument("--out")
    parser.add_argument("--decode", default="on-demand", help=argparse.SUPPRESS)
    parser.add_argument("--viewer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dashboard", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    add_json_flag(parser)
    args = parser.parse_args()
    if args.child and args.floor:
        floor_child(args.child, args.seconds, Path(args.out))
        return
    if args.child:
        child(args.child, args.seconds, Path(args.out), args.decode, args.viewer, args.dashboard)
        return
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is not installed")
    work = Path(tempfile.mkdtemp(prefix="cb-bench-capture-"))
    try:
        with cpu_hogs(args.load):
            run_all(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    FIGURES.emit(args.json)


def run_all(args: argparse.Namespace, work: Path) -> None:
    from cinebridge_common.embedded import free_port

    load = f" + {args.load} busy processes" if args.load else ""
    print(
        f"capture bench: {SOURCE}, {args.seconds:g} s, libx264 {PRESET}/{TUNE} "
        f"{PARAMS} crf {CRF}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}{load}"
    )
    if args.only_passthrough:
        passthrough(args.seconds, work)
        return
    if not args.only_snapshots:
        cb = cinebridge_side(f"lavfi:{SOURCE}", args.seconds, work / "cb.mp4")
        ff = ffmpeg_encode_side(args.seconds, work / "ff.mp4")
        report("1080p30 recording, encoded", cb, ff, "ffmpeg -re (same x264)", "encoded")
    if not (args.skip_passthrough or args.only_snapshots or args.only_encode):
        passthrough(args.seconds, work)
    if args.only_encode:
        return
    lat = asyncio.run(snapshot_latency(args.snapshots, work, f"lavfi:{SOURCE}"))
    FIGURES.put("snapshots_encoded", print_latency("while recording 1080p30 (encoded)", lat))
    if not args.skip_passthrough:
        port = free_port()
        sender = udp_sender(port)
        try:
            lat = asyncio.run(snapshot_latency(args.snapshots, work, f"udp://127.0.0.1:{port}"))
        finally:
            sender.terminate()
            sender.wait(10)
        title = "while recording network 1080p30 by pass-through (decoded on demand)"
        FIGURES.put("snapshots_passthrough", print_latency(title, lat))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def passthrough(seconds: float, work: Path) -> None:
    from cinebridge_common.embedded import free_port

    port = free_port()
    sender = udp_sender(port)
    try:
        url = f"udp://127.0.0.1:{port}"
        short = min(seconds, 60.0)
        cb = cinebridge_side(url, seconds, work / "cb-pt.mp4")
        ff = ffmpeg_copy_side(
            url + "?fifo_size=1000000&overrun_nonfatal=1", seconds, work / "ff-pt.mp4"
        )
        floor = floor_side(url, short, work / "floor-pt.mp4")
        polled = cinebridge_side(url, short, work / "cb-pt-dash.mp4", dashboard=True)
        watched = cinebridge_side(url, short, work / "cb-pt-view.mp4", viewer=True)
        cb_all = cinebridge_side(url, short, work / "cb-pt-all.mp4", decode="all")
    finally:
        sender.terminate()
        sender.wait(10)
    report(
        "network H.264 1080p30 (UDP MPEG-TS), pass-through", cb, ff, "ffmpeg -c copy", "passthrough"
    )
    print(
        f"  (decode on demand: {cb['thumbnails']} thumbnails (nobody asked), no preview "
        "watcher; snapshots decode keyframe -> latest packet)"
    )
    report(
        f"floor: PyAV demux -> mux loop alone, {short:g} s",
        floor,
        ff,
        "ffmpeg -c copy",
        "passthrough_floor",
    )
    report(
        f"pass-through, a dashboard polling the thumbnail every 5 s, {short:g} s",
        polled,
        ff,
        "ffmpeg -c copy",
        "passthrough_dashboard",
    )
    print(f"  ({polled['thumbnails']} thumbnails made)")
    report(
        f"pass-through with one live preview watcher, {short:g} s",
        watched,
        ff,
        "ffmpeg -c copy",
        "passthrough_viewer",
    )
    print(f"  ({watched['previews']} preview JPEGs made)")
    report(
        f"pass-through, CB_CAPTURE_PASSTHROUGH_DECODE=all, {short:g} s",
        cb_all,
        ff,
        "ffmpeg -c copy",
        "passthrough_decode_all",
    )


def _camera_priority() -> None:
    with contextlib.suppress(OSError):
        os.nice(-10)


def udp_sender(port: int) -> subprocess.Popen[bytes]:
    """A network H.264 camera: the test pattern encoded by ffmpeg, MPEG-TS over UDP."""
    return subprocess.Popen(
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
        # The camera is not on this box in real life: --load must not starve it.
        preexec_fn=_camera_priority,
    )


def floor_child(url: str, seconds: float, out: Path) -> None:
    """The least a Python process can do for pass-through: PyAV demux -> mux, nothing else."""
    import av
    from cinebridge_capture.recorder import container_options

    src = av.open(url + "?fifo_size=1000000&overrun_nonfatal=1", timeout=(5.0, 5.0))
    stream = src.streams.video[0]
    dst = av.open(str(out), "w", format="mp4", options=container_options("mp4"))
    target: Any = dst.add_stream_from_template(stream)
    deadline, started, offset, frames = time.monotonic() + seconds, False, 0, 0
    cpu0 = process_cpu()
    for packet in src.demux(stream):
        if packet.dts is None:
            continue
        if not started:
            if not packet.is_keyframe:
                continue
            started, offset = True, packet.dts
        packet.dts -= offset
        packet.pts = (packet.pts if packet.pts is not None else packet.dts + offset) - offset
        packet.stream = target
        dst.mux(packet)
        frames += 1
        if time.monotonic() >= deadline:
            break
    dst.close()
    src.close()
    steady = process_cpu() - cpu0
    print(json.dumps({"frames": frames, "dropped": 0, "passthrough": True, "steady_cpu": steady}))


def floor_side(url: str, seconds: float, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", url, "--floor", "--seconds", str(seconds)]
    cpu, rss, stdout, _ = run_measured([*cmd, "--out", str(out)])
    frames, duration = probe_frames(out)
    return {
        **json.loads(stdout.strip().splitlines()[-1]),
        "duration": duration,
        "cpu": cpu,
        "rss": rss,
        "frames": frames,
    }


if __name__ == "__main__":
    main()
