"""Storage SCP benchmark: CineBridge's SCP against DCMTK storescp and Orthanc, same run, same data.

DCMTK storescu sends (with TCP_NODELAY=1, docs/peers.md "Nagle") to each receiver in turn:
  1. N small instances (~0.5 MB CT-like, default 500) over one association;
  2. one large video instance (~1 GB H.264-syntax encapsulated, default 1024 MB);
  3. the small instances split over 4 concurrent senders.
Prints seconds, instances/s, MB/s, the receiver's CPU seconds and peak RSS (whole process tree),
then CineBridge's ratio against each peer (>1 = CineBridge faster), and the durability floor:
what writing, fsyncing and renaming each small instance costs on this disk by itself — a cost
CineBridge pays before every 0x0000 and neither peer pays at all. Receivers run side by side
and the runs are interleaved; `--repeat N` takes the median of N rounds. The floor is measured
in the same rotation (a turn after each small-instance scenario of each round, so twice per
round) and its median is used: measured once, on its own, it moved 2x between runs.

    .venv/bin/python bench/scp.py [--small 500] [--large-mb 1024] [--senders 4] [--repeat 1]

CineBridge runs as its own process (`python -m cinebridge_scp`) against an embedded NATS and
PostgreSQL started here, with fsync of every file and a committed row per instance; storescp
and Orthanc run with their defaults (storescp `--fork` so that it serves concurrent senders).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import MPEG4HP41, ExplicitVRLittleEndian, generate_uid
from report import Figures, add_json_flag

CT = "1.2.840.10008.5.1.4.1.1.2"
VIDEO = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
ENV = {"TCP_NODELAY": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _meta(ds: Dataset, ts: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    return ds


def _base(sop_class: str, study: str, series: str, n: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.StudyDate = "Bench^Patient", "BENCH1", "20261129"
    ds.Modality, ds.InstanceNumber = "CT", n
    return ds


def make_small(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    pixels = os.urandom(512 * 512 * 2)
    paths = []
    for n in range(count):
        ds = _base(CT, study, series, n)
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.PixelData = pixels
        path = folder / f"ct{n:04d}.dcm"
        _meta(ds, ExplicitVRLittleEndian).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_large(path: Path, megabytes: int) -> Path:
    """A video instance whose one fragment is `megabytes` of bytes, written in chunks."""
    ds = _base(VIDEO, generate_uid(), generate_uid(), 1)
    ds.Modality = "ES"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 1080, 1920, 3
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "YBR_PARTIAL_420", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.NumberOfFrames, ds.FrameTime = 1, 40.0
    _meta(ds, MPEG4HP41).save_as(path, enforce_file_format=True)
    size = megabytes * 1024 * 1024
    chunk = os.urandom(8 << 20)
    with open(path, "ab") as fh:
        fh.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")  # Pixel Data, undefined length
        fh.write(b"\xfe\xff\x00\xe0\x00\x00\x00\x00")  # empty Basic Offset Table
        fh.write(b"\xfe\xff\x00\xe0" + size.to_bytes(4, "little"))
        left = size
        while left:
            fh.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
        fh.write(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    return path


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of `pid` and all its descendants (storescp --fork children)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            stack += [int(c) for c in children]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, reaped children included) of `pid` and its descendants."""
    total, stack = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            stack += [int(c) for c in children]
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
    return total


def durability_floor(files: list[Path], folder: Path) -> float:
    """Seconds per instance to make a copy durable the way CineBridge must before 0x0000:
    write, fsync, rename into a dated folder, fsync that folder. Neither peer does this."""
    tmp, final = folder / ".tmp", folder / "2026" / "11" / "29"
    tmp.mkdir(parents=True)
    final.mkdir(parents=True)
    started = time.perf_counter()
    for n, path in enumerate(files):
        part = tmp / f"{n}.part"
        with open(part, "wb") as fh:
            fh.write(path.read_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, final / f"{n}.dcm")
        fd = os.open(final, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
    elapsed = (time.perf_counter() - started) / len(files)
    shutil.rmtree(folder, ignore_errors=True)
    return elapsed


@contextmanager
def rss_sampler(pid: int) -> Iterator[list[int]]:
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss_kb(pid))
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def storescu(port: int, aet: str, folders: list[Path], syntax: str) -> float:
    """Run one storescu per folder at once; seconds until all finished successfully."""
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", aet, "+sd", "-R", syntax, "127.0.0.1", str(port), str(folder)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for folder in folders
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.monotonic() - started


class Receiver:
    name = ""
    aet = ""
    port = 0
    proc: subprocess.Popen[bytes]

    def start(self) -> None: ...

    def reset(self) -> None: ...

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class DcmtkStorescp(Receiver):
    name, aet = "storescp", "STORESCP"

    def __init__(self, work: Path) -> None:
        self.out = work / "storescp"

    def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["storescp", "--fork", "+xn", "-aet", self.aet, "-od", str(self.out), str(self.port)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def reset(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True)


class Orthanc(Receiver):
    name, aet = "orthanc", "ORTHANC"

    def __init__(self, work: Path) -> None:
        self.work = work / "orthanc"

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.port, http = free_port(), free_port()
        config = {
            "StorageDirectory": str(self.work / "db"),
            "IndexDirectory": str(self.work / "db"),
            "DicomPort": self.port,
            "HttpPort": http,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "Plugins": [],
            "DicomCheckCalledAet": False,
        }
        (self.work / "orthanc.json").write_text(json.dumps(config))
        self.proc = subprocess.Popen(
            ["Orthanc", str(self.work / "orthanc.json")],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def reset(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)
        self.start()


class CineBridge(Receiver):
    name, aet = "cinebridge", "CINEBRIDGE"
    #: CB_LOG_LEVEL of the SCP process (the service's default is INFO).
    log_level = "WARNING"

    def __init__(self, work: Path, nats_url: str, dsn: str, workers: int) -> None:
        self.work = work / "cinebridge"
        self.nats_url, self.dsn, self.workers = nats_url, dsn, workers

    def start(self) -> None:
        self.port = free_port()
        env = dict(
            os.environ,
            CB_NATS_URL=self.nats_url,
            CB_DATABASE_URL=self.dsn,
            CB_MEDIA_ROOT=str(self.work / "media"),
            CB_SCP_PORT=str(self.port),
            CB_LOG_LEVEL=self.log_level,
            CB_INSTANCE_ID="bench",
            CB_SCP_WORKERS=str(self.workers),
        )
        self.proc = subprocess.Popen([sys.executable, "-m", "cinebridge_scp"], env=env)
        wait_port(self.port)

    def reset(self) -> None:
        asyncio.run(self._truncate())
        shutil.rmtree(self.work / "media" / "received", ignore_errors=True)

    async def _truncate(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                "TRUNCATE received_instances, received_series, received_studies, outbox"
            )
        finally:
            await conn.close()


def measure(receiver: Receiver, folders: list[Path], syntax: str) -> tuple[float, int, float]:
    """Seconds, peak RSS (KB) and CPU seconds of the receiver for one storescu run."""
    receiver.reset()
    cpu = _tree_cpu_s(receiver.proc.pid)
    with rss_sampler(receiver.proc.pid) as peak:
        seconds = storescu(receiver.port, receiver.aet, folders, syntax)
    return seconds, peak[0], _tree_cpu_s(receiver.proc.pid) - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large-mb", type=int, default=1024)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument("--workers", type=int, default=1, help="CB_SCP_WORKERS for CineBridge")
    parser.add_argument("--only", default="", help="comma list of receivers")
    add_json_flag(parser)
    args = parser.parse_args()
    figures = Figures("scp")
    for tool in ("storescu", "storescp", "Orthanc"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not installed (see .ci/packages.txt)")
    work = Path(tempfile.mkdtemp(prefix="cb-bench-scp-", dir=os.environ.get("CB_BENCH_DIR")))
    nats, pg = EmbeddedNats(work / "nats"), EmbeddedPostgres(work / "pg")
    nats.start()
    pg.start()
    try:
        run(args, work, nats.url, pg.dsn, figures)
    finally:
        nats.stop()
        pg.stop("immediate")
        shutil.rmtree(work, ignore_errors=True)
    figures.emit(args.json)


#: Scenario of a run (by position) → its name in the JSON figures.
SCENARIO_KEYS = ("small_1_sender", "video", "small_n_senders")


def run(args: argparse.Namespace, work: Path, nats_url: str, dsn: str, figures: Figures) -> None:
    data = work / "data"
    small = make_small(data / "small", args.small)
    small_mb = sum(p.stat().st_size for p in small) / 1e6
    large = make_large(
        (data / "large").mkdir(parents=True) or data / "large" / "video.dcm", args.large_mb
    )
    large_mb = large.stat().st_size / 1e6
    parts = [data / f"part{n}" for n in range(args.senders)]
    for n, path in enumerate(small):
        parts[n % args.senders].mkdir(exist_ok=True)
        os.link(path, parts[n % args.senders] / path.name)
    receivers: list[Receiver] = [
        CineBridge(work, nats_url, dsn, args.workers),
        DcmtkStorescp(work),
        Orthanc(work),
    ]
    if args.only:
        receivers = [r for r in receivers if r.name in args.only.split(",")]
    # -xe / -xn pin one syntax per scenario (docs/peers.md "Deflate").
    scenarios: list[tuple[str, list[Path], int, float, str]] = [
        (f"{args.small} small, 1 sender", [data / "small"], args.small, small_mb, "-xe"),
        (f"1 video {large_mb:.0f} MB", [data / "large"], 1, large_mb, "-xn"),
        (f"{args.small} small, {args.senders} senders", parts, args.small, small_mb, "-xe"),
    ]
    # Every receiver runs beside the others, and the runs are interleaved (scenario by scenario,
    # round by round, receivers in a rotating order): load from other jobs on this shared
    # machine then hits all of them alike.
    # The durability floor takes its turn in the same rotation after each small-instance
    # scenario, so that it sees the load the receivers saw; its median is the one reported.
    runs: dict[tuple[str, str], list[tuple[float, int, float]]] = {}
    floors: list[float] = []
    for receiver in receivers:
        receiver.start()
    try:
        for round_ in range(args.repeat):
            for title, folders, count, _, syntax in scenarios:
                turns: list[Receiver | None] = [*receivers]
                if count > 1:
                    turns.append(None)  # the floor's turn
                shift = round_ % len(turns)
                for receiver in turns[shift:] + turns[:shift]:
                    if receiver is None:
                        floors.append(durability_floor(small, work / "floor"))
                        continue
                    runs.setdefault((receiver.name, title), []).append(
                        measure(receiver, folders, syntax)
                    )
    finally:
        for receiver in receivers:
            receiver.stop()
    results = {
        key: (
            statistics.median(r[0] for r in values),
            max(r[1] for r in values),
            statistics.median(r[2] for r in values),
        )
        for key, values in runs.items()
    }
    figures.put("senders", args.senders)
    figures.put("workers", args.workers)
    report(scenarios, receivers, results, floors, figures)


def report(
    scenarios: list[tuple[str, list[Path], int, float, str]],
    receivers: list[Receiver],
    results: dict[tuple[str, str], tuple[float, int, float]],
    floors: list[float],
    figures: Figures,
) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nload average after the run: {load} on {os.cpu_count()} CPUs (shared machine)")
    print(
        f"{'scenario':28} {'receiver':11} {'s':>8} {'inst/s':>8} {'MB/s':>8} "
        f"{'CPU s':>7} {'peak RSS':>9}"
    )
    for key, (title, _, count, megabytes, _) in zip(SCENARIO_KEYS, scenarios, strict=True):
        figures.put("scenarios", key, "instances", count)
        figures.put("scenarios", key, "mb", megabytes)
        for receiver in receivers:
            seconds, rss_kb, cpu = results[(receiver.name, title)]
            figures.put(
                "scenarios",
                key,
                receiver.name,
                {
                    "seconds": seconds,
                    "instances_per_s": count / seconds,
                    "mb_per_s": megabytes / seconds,
                    "cpu_s": cpu,
                    "peak_rss_mb": rss_kb / 1024,
                },
            )
            print(
                f"{title:28} {receiver.name:11} {seconds:8.2f} {count / seconds:8.1f} "
                f"{megabytes / seconds:8.1f} {cpu:7.2f} {rss_kb / 1024:7.0f} MB"
            )
    names = [r.name for r in receivers]
    if "cinebridge" not in names:
        return
    print("\nratio = peer seconds / CineBridge seconds (>= 1: CineBridge as fast or faster)")
    for key, (title, *_) in zip(SCENARIO_KEYS, scenarios, strict=True):
        ours = results[("cinebridge", title)][0]
        for peer in names:
            if peer != "cinebridge":
                figures.put("scenarios", key, f"ratio_{peer}", results[(peer, title)][0] / ours)
        line = ", ".join(
            f"vs {peer}: {results[(peer, title)][0] / ours:.2f}x"
            for peer in names
            if peer != "cinebridge"
        )
        print(f"{title:28} {line}")
    small_title, _, count, _, _ = scenarios[0]
    floor_s = statistics.median(floors)
    figures.put("durability_floor", "ms_per_instance", floor_s * 1000)
    figures.put("durability_floor", "seconds_small", floor_s * count)
    figures.put("durability_floor", "samples_ms", [f * 1000 for f in floors])
    spread = f"{min(floors) * 1000:.2f}-{max(floors) * 1000:.2f}"
    print(
        f"\ndurability floor on this disk: {floor_s * 1000:.2f} ms per small instance, median "
        f"of {len(floors)} measured between the receivers' runs ({spread} ms) "
        f"(write + fsync + rename + directory fsync, which CineBridge does before 0x0000 and "
        f"neither peer does) = {floor_s * count:.2f} s for {count}."
    )
    if "storescp" in names:
        peer = results[("storescp", small_title)][0]
        print(
            f"storescp plus that floor: {peer + floor_s * count:.2f} s; the best ratio any "
            f"receiver that syncs each instance could reach here: "
            f"{peer / (peer + floor_s * count):.2f}x"
        )
        figures.put("durability_floor", "storescp_plus_floor_s", peer + floor_s * count)
        figures.put("durability_floor", "best_ratio_syncing", peer / (peer + floor_s * count))
        # The targets for small instances are set against this durable limit (storescp's time
        # plus the floor), with one sender and with several: several senders' fsyncs must overlap.
        for key, (title, _, n, *_) in zip(SCENARIO_KEYS, scenarios, strict=True):
            if key.startswith("small"):
                limit = results[("storescp", title)][0] + floor_s * n
                ratio = limit / results[("cinebridge", title)][0]
                figures.put("scenarios", key, "ratio_durable_limit", ratio)
                print(f"{title:28} vs the durable limit ({limit:.2f} s): {ratio:.2f}x")


if __name__ == "__main__":
    main()
