"""Worklist C-FIND benchmark: CineBridge's SCU vs DCMTK `findscu`, same wlmscpfs, same query.

Makes the 1,000-entry demo worklist with dump2dcm (or reuses `--root`), starts `wlmscpfs`
(TCP_NODELAY=1), and for a query returning 0 (fixed costs), 200 (C key Modality = ES) and all
1,000 entries measures, interleaved round by round (the order shuffled in every round, so load
from other processes on a shared machine falls on both sides alike):

- `findscu` with its default output (the target's reference) and with `-q`, output to
  /dev/null, end to end as an operator runs it (process start, association, C-FIND, release);
- CineBridge's `find_worklist` (association, C-FIND, release, and every entry decoded into the
  typed `WorklistItem`s with their DICOM JSON text the gateway receives), in this process, with
  Python's cyclic garbage collector on as everywhere (no process-wide tweak).

Both send the same identifier (`build_identifier`, saved as the findscu query file) and must
count the same answers. Prints per side the median and p25-p75 of wall time and CPU time (ours:
this process; findscu: the child's rusage), and ratio = median findscu / median CineBridge
(>= 1.0: CineBridge as fast or faster). Target: >= 1.0 at 1,000 entries vs default findscu.

    .venv/bin/python bench/worklist.py [--runs 30] [--repeat 50] [--root DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cinebridge_common.messages import WorklistQueryReply
from cinebridge_gateway.worklist_pages import StoredAnswer
from cinebridge_testkit.demo_worklist import DEFAULT_COUNT, DEMO_AE, write_worklist
from cinebridge_testkit.worklist_peers import Wlmscpfs
from cinebridge_worklist.query import SearchFields, ServerKeys, build_identifier
from cinebridge_worklist.scu import FindLimits, Peer, find_worklist
from report import Figures, add_json_flag

#: (wall seconds, CPU seconds, answers)
Sample = tuple[float, float, int]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def findscu_args(port: int, query: Path, quiet: bool) -> list[str]:
    exe = shutil.which("findscu")
    assert exe, "findscu (DCMTK) is not installed"
    return [
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


def findscu(port: int, query: Path, quiet: bool) -> Sample:
    """One findscu run, output to /dev/null (a pipe into Python would slow findscu down and
    flatter the ratio). The wlmscpfs child is never reaped here, so RUSAGE_CHILDREN's growth
    is findscu's own CPU time."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run(
        findscu_args(port, query, quiet),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started, _children_cpu() - cpu, -1


def findscu_count(port: int, query: Path) -> int:
    env = {**os.environ, "TCP_NODELAY": "1"}
    done = subprocess.run(findscu_args(port, query, False), env=env, capture_output=True)
    assert done.returncode == 0, done.stderr[-500:]
    return done.stderr.count(b"Find Response:") + done.stdout.count(b"Find Response:")


def ours(port: int, keys: ServerKeys) -> Sample:
    """One `find_worklist`, CPU time of this process."""
    identifier = build_identifier(SearchFields(), keys)
    peer = Peer("127.0.0.1", port, DEMO_AE, "SPACS")
    cpu = time.process_time()
    started = time.perf_counter()
    result = find_worklist(peer, identifier, FindLimits(timeout_s=60, max_entries=5000), "")
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    assert result.outcome == "complete" and not result.warnings, (result.detail, result.warnings)
    return elapsed, used, len(result.items)


def parse_reply(port: int, runs: int, shuffle: random.Random, figures: Figures) -> None:
    """The 1,000-entry answer as it crosses the bus, parsed as the gateway parses it
    (`StoredAnswer.from_reply_bytes`) and as a generic bus reply (`WorklistQueryReply`),
    interleaved, CPU time of this process."""
    found = find_worklist(
        Peer("127.0.0.1", port, DEMO_AE, "SPACS"),
        build_identifier(SearchFields(), ServerKeys()),
        FindLimits(timeout_s=60, max_entries=5000),
        "",
    )
    data = WorklistQueryReply(ok=True, outcome="complete", items=found.items).to_bytes()

    def timed(parse: Callable[[], object]) -> float:
        cpu = time.process_time()
        parse()
        return time.process_time() - cpu

    def gateway() -> object:
        return StoredAnswer.from_reply_bytes(data)

    def generic() -> object:
        return WorklistQueryReply.from_bytes(data)

    sides = {
        kind: functools.partial(timed, parse)
        for kind, parse in (("gateway page store", gateway), ("bus reply model", generic))
    }
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(runs):
        order = list(sides)
        shuffle.shuffle(order)
        for side in order:
            cpu[side].append(sides[side]())
    print(f"\nparsing the 1,000-entry answer ({len(data) / 1e6:.1f} MB), CPU ms median (p25-p75)")
    for kind, values in cpu.items():
        print(f"  {kind:20} {fmt(values)}")
        figures.put(
            "parse_1000", kind.replace(" ", "_"), "cpu_ms", statistics.median(values) * 1000
        )


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """(p25, median, p75)"""
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def fmt(values: list[float]) -> str:
    p25, p50, p75 = quantiles(values)
    return f"{p50 * 1000:6.0f} ({p25 * 1000:4.0f}-{p75 * 1000:4.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="interleaved rounds per query")
    parser.add_argument("--repeat", type=int, default=50, help="N x 200-entry queries")
    parser.add_argument("--root", type=Path, help="reuse/keep the worklist files here")
    parser.add_argument("--seed", type=int, default=5, help="of the per-round order shuffle")
    add_json_flag(parser)
    args = parser.parse_args()
    figures = Figures("worklist")
    assert args.runs >= 2, "--runs must be at least 2 (quartiles)"
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
        ("0 entries (Modality XX)", ServerKeys(modality="XX")),
        ("200 entries (Modality ES)", ServerKeys(modality="ES")),
        ("1,000 entries (universal)", ServerKeys()),
    ]
    slugs = {cases[0][0]: "entries_0", cases[1][0]: "entries_200", cases[2][0]: "entries_1000"}
    sides_json = {
        "findscu": "findscu",
        "findscu -q": "findscu_q",
        "CineBridge": "cinebridge",
    }
    shuffle = random.Random(args.seed)
    start_gap, summary = 0.0, "?"
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs")
    try:
        with Wlmscpfs(root, work / "wlmscpfs.log") as server:
            print(
                f"wlmscpfs on port {server.port}; {args.runs} interleaved rounds per query, "
                "order shuffled each round\n"
                "times in ms: median (p25-p75)\n"
            )
            print(
                f"{'query':26} {'side':12} {'wall':>18} {'CPU':>18}   "
                f"ratio of wall medians (findscu / CineBridge)"
            )
            for label, keys in cases:
                query = work / "query.dcm"
                build_identifier(SearchFields(), keys).save_as(
                    query, implicit_vr=False, little_endian=True
                )
                n_dcmtk = findscu_count(server.port, query)
                n_ours = ours(server.port, keys)[2]  # also the warm-up
                assert n_dcmtk == n_ours, (n_dcmtk, n_ours)
                sides: dict[str, Callable[[], Sample]] = {
                    "findscu": functools.partial(findscu, server.port, query, quiet=False),
                    "findscu -q": functools.partial(findscu, server.port, query, quiet=True),
                    "CineBridge": functools.partial(ours, server.port, keys),
                }
                samples: dict[str, list[Sample]] = {name: [] for name in sides}
                for _ in range(args.runs):
                    order = list(sides)
                    shuffle.shuffle(order)
                    for name in order:
                        samples[name].append(sides[name]())
                wall = {name: [s[0] for s in got] for name, got in samples.items()}
                mine = statistics.median(wall["CineBridge"])
                if not n_ours:
                    # What findscu pays beyond us with nothing to transfer: its process start.
                    start_gap = statistics.median(wall["findscu -q"]) - mine
                case = slugs[label]
                figures.put("queries", case, "answers", n_ours)
                for name, got in samples.items():
                    side = sides_json[name]
                    for what, values in (("wall_ms", wall[name]), ("cpu_ms", [s[1] for s in got])):
                        q25, q50, q75 = (v * 1000 for v in quantiles(values))
                        figures.put(
                            "queries", case, side, what, {"p25": q25, "p50": q50, "p75": q75}
                        )
                    ratio = ""
                    if name != "CineBridge":
                        per_round = [
                            theirs / own
                            for theirs, own in zip(wall[name], wall["CineBridge"], strict=True)
                        ]
                        r25, r50, r75 = quantiles(per_round)
                        theirs = statistics.median(wall[name])
                        ratio = (
                            f"{theirs / mine:5.2f}   "
                            f"(per round: median {r50:.2f}, p25-p75 {r25:.2f}-{r75:.2f}"
                        )
                        figures.put("queries", case, side, "ratio", theirs / mine)
                        figures.put(
                            "queries",
                            case,
                            side,
                            "ratio_per_round",
                            {"p25": r25, "p50": r50, "p75": r75},
                        )
                        if n_ours and name.startswith("findscu"):
                            ratio += f"; w/o its start {(theirs - start_gap) / mine:.2f}"
                            figures.put(
                                "queries",
                                case,
                                side,
                                "ratio_without_start",
                                (theirs - start_gap) / mine,
                            )
                        ratio += ")"
                        if n_ours == DEFAULT_COUNT and name == "findscu":
                            summary = f"{theirs / mine:.2f}"
                    print(
                        f"{label if name == 'findscu' else '':26} {name:12} "
                        f"{fmt(wall[name]):>18} {fmt([s[1] for s in got]):>18}   {ratio}"
                    )
                print(f"{'':26} ({n_ours} answers on both sides)")
            parse_reply(server.port, args.runs, shuffle, figures)
            if args.repeat:
                # A busy day: 200-entry answers, many queries; p95 < 2 s.
                times = sorted(ours(server.port, cases[1][1])[0] for _ in range(args.repeat))
                p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
                figures.put("repeat_200", "queries", args.repeat)
                figures.put("repeat_200", "p50_s", statistics.median(times))
                figures.put("repeat_200", "p95_s", p95)
                print(
                    f"\n{args.repeat} x 200-entry queries (CineBridge): "
                    f"p50 {statistics.median(times):.3f}s, p95 {p95:.3f}s (target < 2 s)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}")
    print(
        "\nratio >= 1.0: CineBridge as fast or faster. findscu's time includes its process "
        "start (the 0-entry row; 'w/o its start'\nsubtracts that row's findscu -q - CineBridge "
        "gap); CineBridge's includes decoding every entry to typed items + DICOM JSON."
    )
    print(f"\n1,000 entries, findscu (default output) / CineBridge: {summary} (target >= 1.0)")
    figures.put("ratio_findscu_over_cinebridge_1000", float(summary) if summary != "?" else None)
    sys.stdout.flush()
    figures.emit(args.json)


if __name__ == "__main__":
    main()
