"""Benchmark: CineBridge's C-STORE SCU against DCMTK `storescu`, same files, same `storescp`.

Prints, in one run: instances/s and MB/s for N small instances and for one large video
instance, for each sender, the ratio (CineBridge / storescu, higher is better) and each
sender's peak RSS. Receiver: DCMTK `storescp --fork --ignore` (receives everything, stores
nothing, so disk speed is not measured) with TCP_NODELAY=1 (docs/peers.md "Nagle").

    .venv/bin/python bench/send.py                       # 500 x 0.5 MB and a 1 GB video
    .venv/bin/python bench/send.py --small 100 --video-mb 100  # quicker

CineBridge runs in a child process (its own RSS) and sends with `scu.send_parallel`, i.e. the
code the service runs per batch: files streamed as they are, up to `--associations` at once.

Then the same files go into Orthanc with its DICOMweb plugin twice per run, side by side:
CineBridge's C-STORE and CineBridge's STOW-RS (`stow.send`, PS3.18 §10.5), with the ratio
(STOW-RS / C-STORE, higher is better) and each side's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cinebridge_common.embedded import free_port
from cinebridge_testkit.instances import make_instance
from cinebridge_testkit.instances import write_large_video as write_video
from cinebridge_testkit.storage_peers import DcmtkStorescp, OrthancPeer
from report import Figures, add_json_flag


def _hwm(pid: int) -> int:
    """VmHWM (peak RSS since exec) of a running process, in bytes; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of a child process. Peak RSS is polled from
    /proc (VmHWM restarts at exec; rusage would count the forked copy of this process)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _hwm(proc.pid))
            time.sleep(0.005)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({proc.returncode}):\n{text[-3000:]}")
    return wall, peak, text


def storescu(files: list[Path], port: int, propose: tuple[str, ...]) -> tuple[float, int]:
    binary = shutil.which("storescu")
    if not binary:
        raise SystemExit("storescu not found: apt-get install dcmtk")
    env = {**os.environ, "TCP_NODELAY": "1"}
    wall, rss, _ = run_child(
        [binary, *propose, "-aec", "STORESCP", "127.0.0.1", str(port), *map(str, files)], env
    )
    return wall, rss


def cinebridge(
    files: list[Path], port: int, associations: int, **target: object
) -> tuple[float, int]:
    """One CineBridge send in a child process: C-STORE to `port` (AE `ae`, default STORESCP),
    or STOW-RS to `url` when given."""
    spec = json.dumps(
        {"files": [str(f) for f in files], "port": port, "assoc": associations, **target}
    )
    _wall, rss, out = run_child([sys.executable, __file__, "--child", spec])
    result = json.loads(out.strip().splitlines()[-1])
    if result["failed"]:
        raise SystemExit(f"CineBridge failed to send {result['failed']} instances")
    return result["seconds"], rss


def child(spec_json: str) -> None:
    """The CineBridge side: only the send is timed (the interpreter start is not, as DCMTK's
    is negligible); one line of JSON out."""
    from cinebridge_sender import scu
    from pynetdicom.dsutils import split_dataset

    spec = json.loads(spec_json)
    items = []
    for name in spec["files"]:
        meta, _ = split_dataset(Path(name))
        items.append(
            scu.Item(
                key=name,
                path=Path(name),
                sop_class_uid=str(meta.MediaStorageSOPClassUID),
                sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
                transfer_syntax_uid=str(meta.TransferSyntaxUID),
            )
        )
    started = time.perf_counter()
    if spec.get("url"):
        results = asyncio.run(stow_send(spec["url"], items, spec["assoc"]))
    else:
        peer = scu.Peer(spec.get("ae", "STORESCP"), "127.0.0.1", spec["port"])
        results = scu.send_parallel(peer, items, scu.Timeouts(), associations=spec["assoc"])
    seconds = time.perf_counter() - started
    failed = sum(1 for r in results if r.outcome not in ("sent", "warning"))
    print(json.dumps({"seconds": seconds, "failed": failed}))


async def stow_send(url: str, items: list[Any], lanes: int) -> list[Any]:
    """What the service does per STOW-RS batch: `stow.send` with the default request bound and
    up to `lanes` concurrent request streams."""
    from cinebridge_sender import scu, stow
    from cinebridge_sender.settings import SenderSettings

    results: list[scu.ItemResult] = []

    async def record(result: scu.ItemResult) -> None:
        results.append(result)

    archive = stow.Archive(url)
    max_bytes = SenderSettings.model_fields["sender_stow_request_max_mb"].default << 20
    async with stow.client(archive, scu.Timeouts(dimse_s=600, network_s=600)) as http:
        await stow.send(http, archive, items, record, max_request_bytes=max_bytes, lanes=lanes)
    return results


def median(results: list[tuple[float, int]]) -> tuple[float, int]:
    """Median time and the highest peak RSS of several runs."""
    ordered = sorted(results, key=lambda r: r[0])
    return ordered[len(ordered) // 2][0], max(r[1] for r in results)


#: Text label of a sender → its name in the JSON figures.
SIDES = {
    "DCMTK storescu": "storescu",
    "CineBridge": "cinebridge",
    "CineBridge, 1 assoc": "cinebridge_one_association",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--small-kb", type=int, default=512)
    parser.add_argument("--video-mb", type=int, default=1024)
    parser.add_argument("--associations", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="median of this many runs (small)")
    parser.add_argument("--max-pdu", type=int, default=0, help="storescp --max-pdu (0: default)")
    parser.add_argument("--child")
    add_json_flag(parser)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    figures = Figures("send")
    binary = shutil.which("storescp")
    if not binary:
        raise SystemExit("storescp not found: apt-get install dcmtk")
    with tempfile.TemporaryDirectory(prefix="cb-bench-send-") as tmp:
        root = Path(tmp)
        small = [root / "small" / f"{n:04d}.dcm" for n in range(args.small)]
        for n, path in enumerate(small):
            make_instance(path, kind="raw", payload_bytes=args.small_kb * 1024, seed=n)
        video = root / "video.dcm"
        write_video(video, args.video_mb * 1024 * 1024)
        small_mb = sum(p.stat().st_size for p in small) / 1e6
        video_mb = video.stat().st_size / 1e6
        pdu = ("--max-pdu", str(args.max_pdu)) if args.max_pdu else ()
        scp = DcmtkStorescp(
            binary, root / "scp" / "out", free_port(), extra_args=("--fork", "--ignore", *pdu)
        )
        scp.start()
        try:
            rows = []
            # storescu sends files as they are only over a context with their own syntax: the
            # video needs -xn (propose MPEG-4 AVC HP@L4.1), as CineBridge proposes by itself.
            for label, files, size, runs, propose in (
                (f"{args.small} small ({small_mb:.0f} MB)", small, small_mb, args.runs, ()),
                (f"video ({video_mb:.0f} MB)", [video], video_mb, args.runs, ("-xn",)),
            ):
                # Interleaved runs: the shared machine's noise hits both senders alike.
                dcmtk_runs, ours_runs, one_runs = [], [], []
                for _ in range(runs):
                    dcmtk_runs.append(storescu(files, scp.port, propose))
                    ours_runs.append(cinebridge(files, scp.port, args.associations))
                    if len(files) > 1:  # one instance always travels over one association
                        one_runs.append(cinebridge(files, scp.port, 1))
                rows.append(
                    (
                        label,
                        len(files),
                        size,
                        median(dcmtk_runs),
                        median(ours_runs),
                        median(one_runs) if one_runs else None,
                    )
                )
        finally:
            scp.stop()
        loads = [(row[0], small if n == 0 else [video], row[2]) for n, row in enumerate(rows)]
        archive_rows = into_orthanc(args, loads, root / "orthanc")
    print(
        f"receiver: storescp --fork --ignore, TCP_NODELAY=1; CineBridge up to "
        f"{args.associations} associations (and 1 for reference)"
    )
    header = f"{'load':<22} {'sender':<24} {'s':>7} {'inst/s':>8} {'MB/s':>8} {'peak RSS MB':>12}"
    print(header)
    figures.put("associations", args.associations)
    for (label, count, size, dcmtk, ours, one), load in zip(rows, ("small", "video"), strict=True):
        senders = [("DCMTK storescu", dcmtk), ("CineBridge", ours)]
        if one is not None:
            senders.append(("CineBridge, 1 assoc", one))
        figures.put(load, "instances", count)
        figures.put(load, "mb", size)
        for name, (secs, rss) in senders:
            side = SIDES[name]
            figures.put(load, side, "seconds", secs)
            figures.put(load, side, "instances_per_s", count / secs)
            figures.put(load, side, "mb_per_s", size / secs)
            figures.put(load, side, "peak_rss_mb", rss / 1e6)
            print(
                f"{label:<22} {name:<24} {secs:7.2f} {count / secs:8.1f} {size / secs:8.1f} "
                f"{rss / 1e6:12.1f}"
            )
        extra = f" (1 association: {dcmtk[0] / one[0]:.2f})" if one is not None else ""
        print(f"{label:<22} ratio CineBridge/storescu = {dcmtk[0] / ours[0]:.2f}{extra}")
        figures.put(load, "ratio", dcmtk[0] / ours[0])
        if one is not None:
            figures.put(load, "ratio_one_association", dcmtk[0] / one[0])
    print(
        "storescu's time includes its process start and exit (~10 ms); CineBridge's is the send "
        "in a running service (the interpreter start is not counted)."
    )
    print_orthanc(archive_rows, args, figures)
    figures.emit(args.json)


Row = tuple[str, int, float, tuple[float, int], tuple[float, int]]


def into_orthanc(args: argparse.Namespace, loads: list[Any], work: Path) -> list[Row]:
    """The same files into one Orthanc with its DICOMweb plugin, by C-STORE (`--associations`)
    and by STOW-RS (as many request streams, as a batch of the service), interleaved; Orthanc's
    store is emptied before each run so every run stores everything."""
    binary = shutil.which("Orthanc")
    if not binary:
        raise SystemExit("Orthanc not found: apt-get install orthanc orthanc-dicomweb")
    peer = OrthancPeer(binary, work, free_port(), free_port(), dicomweb=True)
    peer.start()
    rows: list[Row] = []
    try:
        for label, files, size in loads:
            cstore_runs, stow_runs = [], []
            for _ in range(args.runs):
                peer.clear()
                cstore_runs.append(
                    cinebridge(files, peer.dicom_port, args.associations, ae="ORTHANC")
                )
                peer.clear()
                stow_runs.append(cinebridge(files, 0, args.associations, url=peer.dicomweb_url))
            rows.append((label, len(files), size, median(cstore_runs), median(stow_runs)))
    finally:
        peer.stop()
    return rows


def print_orthanc(rows: list[Row], args: argparse.Namespace, figures: Figures) -> None:
    print(
        f"receiver: Orthanc with its DICOMweb plugin (stores to disk); C-STORE up to "
        f"{args.associations} associations, STOW-RS up to {args.associations} request streams"
    )
    for (label, count, size, cstore, stow), load in zip(rows, ("small", "video"), strict=True):
        for side, (secs, rss) in (("orthanc_cstore", cstore), ("orthanc_stow", stow)):
            figures.put(load, side, "seconds", secs)
            figures.put(load, side, "instances_per_s", count / secs)
            figures.put(load, side, "mb_per_s", size / secs)
            figures.put(load, side, "peak_rss_mb", rss / 1e6)
            name = "CineBridge C-STORE" if side == "orthanc_cstore" else "CineBridge STOW-RS"
            print(
                f"{label:<22} {name:<24} {secs:7.2f} {count / secs:8.1f} {size / secs:8.1f} "
                f"{rss / 1e6:12.1f}"
            )
        figures.put(load, "ratio_stow_cstore", cstore[0] / stow[0])
        print(f"{label:<22} ratio STOW-RS/C-STORE into Orthanc = {cstore[0] / stow[0]:.2f}")


if __name__ == "__main__":
    main()
