"""Worklist C-FIND benchmark: CineBridge's SCU vs DCMTK `findscu`, same wlmscpfs, same query.

Makes the 1,000-entry demo worklist with dump2dcm (or reuses `--root`), starts `wlmscpfs`
(TCP_NODELAY=1), then for a query returning 200 entries (C key Modality = ES) and one returning
all 1,000 runs, alternately, `findscu` (default output, and `-q`) and `find_worklist` (which
decodes every entry into typed items + DICOM JSON). Prints the median of `--runs` and the ratio
findscu time / CineBridge time (≥ 1.0: CineBridge is as fast or faster). Target: ≥ 1.0 at
1,000 entries against findscu with its default output.

    .venv/bin/python bench/worklist.py [--runs 5] [--repeat 50] [--root DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cinebridge_worklist.demo_worklist import DEFAULT_COUNT, DEMO_AE, write_worklist
from cinebridge_worklist.query import SearchFields, ServerKeys, build_identifier
from cinebridge_worklist.scu import FindLimits, Peer, find_worklist
from cinebridge_worklist.testpeers import Wlmscpfs


def findscu(port: int, query: Path, quiet: bool, count: bool = False) -> tuple[float, int]:
    """Wall time of one findscu run; its output goes to /dev/null (a pipe into Python would
    slow findscu down and flatter the ratio). `count` runs it once more to count responses."""
    exe = shutil.which("findscu")
    assert exe, "findscu (DCMTK) is not installed"
    args = [
        exe,
        "-W",
        "-aet",
        "SPACS",
        "-aec",
        DEMO_AE,
        *(["-q"] if quiet else []),
        "127.0.0.1",
        str(port),
        str(query),
    ]
    env = {**os.environ, "TCP_NODELAY": "1"}
    started = time.perf_counter()
    subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - started
    if not count:
        return elapsed, 0
    done = subprocess.run(args, env=env, capture_output=True, check=True)
    return elapsed, done.stderr.count(b"Find Response:") + done.stdout.count(b"Find Response:")


def ours(port: int, keys: ServerKeys) -> tuple[float, int]:
    identifier = build_identifier(SearchFields(), keys)
    peer = Peer("127.0.0.1", port, DEMO_AE, "SPACS")
    started = time.perf_counter()
    result = find_worklist(peer, identifier, FindLimits(timeout_s=60, max_entries=5000), "")
    elapsed = time.perf_counter() - started
    assert result.outcome == "complete", result.detail
    return elapsed, len(result.items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=50, help="L6: N x 200-entry queries")
    parser.add_argument("--root", type=Path, help="reuse/keep the worklist files here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cb-bench-worklist-"))
    root = args.root or work / "worklist"
    if len(list((root / DEMO_AE).glob("*.wl"))) != DEFAULT_COUNT:
        started = time.perf_counter()
        write_worklist(root / DEMO_AE, DEFAULT_COUNT, dt.date.today())
        print(
            f"made {DEFAULT_COUNT} worklist files with dump2dcm in "
            f"{time.perf_counter() - started:.1f} s"
        )
    cases = [
        ("200 entries (Modality ES)", ServerKeys(modality="ES")),
        ("1,000 entries (universal)", ServerKeys()),
    ]
    try:
        with Wlmscpfs(root, work / "wlmscpfs.log") as server:
            print(f"wlmscpfs on port {server.port}; median of {args.runs} runs, alternating\n")
            print(
                f"{'query':28} {'findscu':>9} {'findscu -q':>11} {'CineBridge':>11} "
                f"{'ratio':>7} {'ratio -q':>9}"
            )
            for label, keys in cases:
                query = work / "query.dcm"
                build_identifier(SearchFields(), keys).save_as(
                    query, implicit_vr=False, little_endian=True
                )
                _, n_dcmtk = findscu(server.port, query, quiet=False, count=True)
                _, n_ours = ours(server.port, keys)  # warm-up, and the same answer
                assert n_dcmtk == n_ours, (n_dcmtk, n_ours)
                plain, quiet, mine = [], [], []
                for _ in range(args.runs):
                    plain.append(findscu(server.port, query, quiet=False)[0])
                    quiet.append(findscu(server.port, query, quiet=True)[0])
                    mine.append(ours(server.port, keys)[0])
                p, q, m = (statistics.median(x) for x in (plain, quiet, mine))
                print(f"{label:28} {p:8.3f}s {q:10.3f}s {m:10.3f}s {p / m:7.2f} {q / m:9.2f}")
            if args.repeat:
                # reliability-notes L6: 200-entry answers, many queries; p95 < 2 s.
                times = sorted(ours(server.port, cases[0][1])[0] for _ in range(args.repeat))
                p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
                print(
                    f"\n{args.repeat} x 200-entry queries (CineBridge): "
                    f"p50 {statistics.median(times):.3f}s, p95 {p95:.3f}s (L6 target < 2 s)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        "\nratio = findscu time / CineBridge time (>= 1.0: CineBridge as fast or faster);"
        " CineBridge's time includes decoding every entry to typed items + DICOM JSON."
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
