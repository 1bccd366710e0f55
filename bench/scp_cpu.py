"""Storage SCP CPU per instance: this tree's SCP against an earlier one, interleaved, same peers.

Wall-clock ratios on a shared 2-CPU machine follow the other jobs' load; the CPU seconds an SCP
process spends per instance barely do. This runs two SCP processes side by side — the code of
this tree and the code of `--old` (a checkout of an earlier commit, e.g. `git archive <rev> |
tar -x -C /tmp/old`; its `services/scp/src`, `libs/dicom/src` and `libs/common/src` are put
first on PYTHONPATH) — against one embedded NATS and PostgreSQL (a database each), and DCMTK
`storescu` sends the same `--small` instances to each in turn, `--rounds` times, alternating
which goes first. For each run it prints the wall seconds, the process's user and system CPU
seconds, and how much of it the event-loop thread spent (the main thread: index statements,
outbox relay, NATS) against the association threads (receive, check, fsync, rename).

    .venv/bin/python bench/scp_cpu.py --old /tmp/old [--small 500] [--senders 1] [--rounds 4]
        [--log-level WARNING]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import asyncpg
from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres
from report import Figures, add_json_flag
from scp import CineBridge, make_small, storescu

SOURCES = ("services/scp/src", "libs/dicom/src", "libs/common/src")


def cpu_s(pid: int, tid: int | None = None) -> tuple[float, float]:
    """User and system CPU seconds of a process (all its threads, ended ones too) or a thread."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class Scp(CineBridge):
    """bench/scp.py's CineBridge receiver, run from the code at `sources` (None: this tree)."""

    def __init__(
        self, work: Path, nats_url: str, dsn: str, label: str, tree: Path | None, log_level: str
    ):
        super().__init__(work / label, nats_url, dsn, 1)
        self.label = label
        self.log_level = log_level
        self.pythonpath = ":".join(str(tree / s) for s in SOURCES) if tree else None

    def start(self) -> None:
        saved = os.environ.pop("PYTHONPATH", None)
        if self.pythonpath:
            os.environ["PYTHONPATH"] = self.pythonpath
        try:
            super().start()
        finally:
            os.environ.pop("PYTHONPATH", None)
            if saved is not None:
                os.environ["PYTHONPATH"] = saved


async def create_database(dsn: str, name: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return f"{dsn.rsplit('/', 1)[0]}/{name}"


def measure(scp: Scp, folders: list[Path]) -> dict[str, float]:
    pid = scp.proc.pid
    scp.reset()
    (user0, sys0), (loop_user0, loop_sys0) = cpu_s(pid), cpu_s(pid, pid)
    seconds = storescu(scp.port, scp.aet, folders, "-xe")
    (user1, sys1), (loop_user1, loop_sys1) = cpu_s(pid), cpu_s(pid, pid)
    loop = loop_user1 - loop_user0 + loop_sys1 - loop_sys0
    return {
        "seconds": seconds,
        "user_s": user1 - user0,
        "sys_s": sys1 - sys0,
        "cpu_s": user1 - user0 + sys1 - sys0,
        "loop_cpu_s": loop,
        "loop_user_s": loop_user1 - loop_user0,
        "threads_cpu_s": user1 - user0 + sys1 - sys0 - loop,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the earlier code")
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--senders", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--log-level", default="WARNING", help="CB_LOG_LEVEL of both SCPs (the service's is INFO)"
    )
    add_json_flag(parser)
    args = parser.parse_args()
    figures = Figures("scp_cpu")
    work = Path(tempfile.mkdtemp(prefix="cb-bench-scp-cpu-", dir=os.environ.get("CB_BENCH_DIR")))
    nats, pg = EmbeddedNats(work / "nats"), EmbeddedPostgres(work / "pg")
    nats.start()
    pg.start()
    try:
        small = make_small(work / "data" / "small", args.small)
        folders = [work / "data" / f"part{n}" for n in range(args.senders)]
        for n, path in enumerate(small):
            folders[n % args.senders].mkdir(exist_ok=True)
            os.link(path, folders[n % args.senders] / path.name)
        scps = [
            Scp(
                work,
                nats.url,
                asyncio.run(create_database(pg.dsn, label)),
                label,
                tree,
                args.log_level,
            )
            for label, tree in (("old", args.old), ("new", None))
        ]
        runs: dict[str, list[dict[str, float]]] = {scp.label: [] for scp in scps}
        for scp in scps:
            scp.start()
        try:
            for round_ in range(args.rounds):
                for scp in scps if round_ % 2 == 0 else scps[::-1]:
                    run = measure(scp, folders)
                    runs[scp.label].append(run)
                    print(
                        f"round {round_} {scp.label}: {run['seconds']:6.2f} s  CPU "
                        f"{run['cpu_s']:5.2f} s (user {run['user_s']:.2f}, sys {run['sys_s']:.2f})"
                        f"  event loop {run['loop_cpu_s']:.2f} (user {run['loop_user_s']:.2f})"
                        f"  association threads {run['threads_cpu_s']:.2f}"
                        f"  load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        finally:
            for scp in scps:
                scp.stop()
    finally:
        nats.stop()
        pg.stop("immediate")
        shutil.rmtree(work, ignore_errors=True)
    figures.put("instances", args.small)
    figures.put("senders", args.senders)
    figures.put("log_level", args.log_level)
    print(f"\nmedians of {args.rounds} rounds, {args.small} instances, {args.senders} sender(s):")
    for label, values in runs.items():
        medians = {key: statistics.median(v[key] for v in values) for key in values[0]}
        figures.put(label, medians)
        figures.put(label, "runs", values)
        print(
            f"{label}: {medians['seconds']:.2f} s, CPU {medians['cpu_s']:.2f} s "
            f"({medians['cpu_s'] / args.small * 1000:.2f} ms per instance; user "
            f"{medians['user_s']:.2f}, sys {medians['sys_s']:.2f}; event loop "
            f"{medians['loop_cpu_s']:.2f}, association threads {medians['threads_cpu_s']:.2f})"
        )
    figures.emit(args.json)


if __name__ == "__main__":
    main()
