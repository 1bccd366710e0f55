"""Gateway benchmark: local-study search over 100,000 studies with 20 concurrent clients,
against the health endpoint measured in the same run (target: search p99 under 100 ms); then
1,000 realistic worklist entries from DCMTK wlmscpfs to the API answer and to a rendered table
in headless Chromium (target: under 1 s; `gateway_worklist.py`). Prints the load average.

Starts an embedded NATS and PostgreSQL, fills `studies` (plus media rows for a tenth of them and
sender deliveries for some), starts the gateway as its own process (`python -m
cinebridge_gateway`), then drives it with N concurrent HTTP clients for a fixed time each.

    .venv/bin/python bench/gateway.py [--studies 100000] [--clients 20] [--seconds 15]
                                      [--worklist 1000] [--worklist-rounds 5] [--no-search]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
from cinebridge_common.db import create_pool, migrate
from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres, free_port, wait_port
from gateway_worklist import bench_worklist, cpu_seconds
from report import Figures, add_json_flag

PASSWORD = "bench-Password-1"
SURNAMES = [
    "SMITH",
    "JONES",
    "MUELLER",
    "SCHMIDT",
    "GARCIA",
    "MARTIN",
    "ROSSI",
    "NOVAK",
    "KOWALSKI",
    "JANSSEN",
    "PETROV",
    "DUBOIS",
    "SILVA",
    "NIELSEN",
    "OLSEN",
    "BERG",
    "HORVAT",
    "KAZLAUSKAS",
    "ANDERSSON",
    "VIRTANEN",
    "MURPHY",
    "WALSH",
    "DOE",
    "ROE",
]


async def fill(dsn: str, studies: int) -> None:
    pool = await create_pool(dsn)
    try:
        await migrate(pool)
        names = "ARRAY[" + ",".join(f"'{s}'" for s in SURNAMES) + "]"
        # Generated in SQL: 100k rows in a second or two instead of 100k round trips.
        await pool.execute(
            f"""
            INSERT INTO studies (id, study_instance_uid, origin, room, patient_name, patient_id,
                                 patient_birth_date, patient_sex, accession_number, study_date,
                                 study_time, created_at)
            SELECT gen_random_uuid(), '2.25.' || (1000000000000 + g)::text,
                   (ARRAY['form','worklist','local','unscheduled'])[1 + g % 4], 'or' || (g % 6),
                   ({names})[1 + (g * 7919) % {len(SURNAMES)}] || '^P' || (g % 997),
                   'PID' || lpad((g * 31 % 1000003)::text, 7, '0'),
                   to_char(date '1940-01-01' + (g % 25000), 'YYYYMMDD'),
                   (ARRAY['M','F','O'])[1 + g % 3], 'ACC' || lpad(g::text, 8, '0'),
                   to_char(date '2020-01-01' + (g % 2500), 'YYYYMMDD'), '101500',
                   now() - make_interval(mins => g)
            FROM generate_series(1, $1) g""",
            studies,
        )
        await pool.execute("""
            INSERT INTO media (id, study_id, room, source, kind, rel_path, size, sha256, mime,
                               state)
            SELECT gen_random_uuid(), id, 'or1', 'cam1', 'snapshot',
                   'media/' || replace(id::text, '-', '') || '.jpg', 1000, 'x', 'image/jpeg',
                   (ARRAY['captured','converted','failed'])[1 + (hashtext(id::text) & 1)]
            FROM studies WHERE hashtext(id::text) % 10 = 0""")
        # A station that holds 100,000 studies has been vacuumed many times over: without it
        # the first autovacuum of the bulk insert ran inside the measured window (and
        # index-only scans still visited the heap); the checkpoint likewise writes the bulk
        # insert out before the clock starts.
        await pool.execute("VACUUM ANALYZE")
        await pool.execute("CHECKPOINT")
    finally:
        await pool.close()


async def login_token(base: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        me = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
        )
        me.raise_for_status()
        client.headers["X-CSRF-Token"] = me.json()["csrf_token"]
        token = await client.post("/api/v1/tokens", json={"name": "bench"})
        token.raise_for_status()
        return str(token.json()["token"])


def search_params(rng: random.Random) -> tuple[str, dict[str, str]]:
    """One search of the mix: its kind and its query parameters."""
    kind = rng.random()
    if kind < 0.5:
        name = rng.choice(SURNAMES)
        return "name", {"q": name[: rng.randint(2, len(name))]}
    if kind < 0.7:
        return "patient_id", {"patient_id": f"PID{rng.randint(0, 99):02d}*"}
    if kind < 0.85:
        return "accession", {"q": f"ACC{rng.randint(0, 99999):05d}"}
    if kind < 0.95:
        return "newest", {}  # the LOCAL dialog's first page: newest studies
    dates = {"date_from": "20230101", "date_to": "20231231"}
    return "name_dates", {"q": rng.choice(SURNAMES)[:3], **dates}


class RawClient:
    """A keep-alive HTTP/1.1 client on asyncio streams: far less CPU per request than httpx,
    so the load generator does not starve the gateway on a small box."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def drive(
    port: int,
    token: str,
    path: str,
    clients: int,
    seconds: float,
    search: bool,
    by_kind: dict[str, list[float]] | None = None,
) -> tuple[list[float], int, float]:
    """N closed-loop clients for `seconds`; each search's latency also goes to `by_kind`."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal errors
        rng = random.Random(n)
        http = RawClient(port, token)
        try:
            while time.perf_counter() < deadline:
                target, kind = path, "health"
                if search:
                    kind, params = search_params(rng)
                    if params:
                        target += "?" + urlencode(params)
                t0 = time.perf_counter()
                status = await http.get(target)
                latencies.append(time.perf_counter() - t0)
                if by_kind is not None:
                    by_kind.setdefault(kind, []).append(latencies[-1])
                errors += status != 200
        finally:
            await http.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, errors, time.perf_counter() - started


def summary(name: str, lat: list[float], errors: int, elapsed: float) -> dict[str, float]:
    lat_ms = sorted(x * 1000 for x in lat)
    p99 = lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))]
    row = {
        "n": len(lat_ms),
        "p50": statistics.median(lat_ms),
        "p99": p99,
        "rps": len(lat_ms) / elapsed,
        "errors": errors,
    }
    print(
        f"{name:<22} requests={row['n']:>6}  p50={row['p50']:7.1f} ms  p99={row['p99']:7.1f} ms"
        f"  rps={row['rps']:7.1f}  errors={errors}"
    )
    return row


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--worklist", type=int, default=1000, help="worklist entries (0: skip)")
    parser.add_argument("--worklist-rounds", type=int, default=5)
    parser.add_argument("--no-search", action="store_true", help="skip the local-search part")
    add_json_flag(parser)
    args = parser.parse_args()
    figures = Figures("gateway")
    try:
        return await run(args, figures)
    finally:
        figures.emit(args.json)


async def run(args: argparse.Namespace, figures: Figures) -> int:
    with tempfile.TemporaryDirectory(prefix="cb-bench-gw-") as tmp:
        root = Path(tmp)
        nats, pg = EmbeddedNats(root / "nats"), EmbeddedPostgres(root / "pg")
        nats.start()
        pg.start()
        gateway = None
        try:
            t0 = time.perf_counter()
            studies = 0 if args.no_search else args.studies
            await fill(pg.dsn, studies)
            print(f"filled {studies} studies in {time.perf_counter() - t0:.1f} s")
            port = free_port()
            env = {
                **os.environ,
                "CB_NATS_URL": nats.url,
                "CB_DATABASE_URL": pg.dsn,
                "CB_MEDIA_ROOT": str(root / "media"),
                "CB_GATEWAY_PORT": str(port),
                "CB_GATEWAY_ADMIN_PASSWORD": PASSWORD,
                "CB_LOG_LEVEL": "WARNING",
                "CB_INSTANCE_ID": "bench-gw",
            }
            gateway = subprocess.Popen([sys.executable, "-m", "cinebridge_gateway"], env=env)
            wait_port(port, 180, gateway)  # a loaded machine starts it slowly
            base = f"http://127.0.0.1:{port}"
            ok = True
            if not args.no_search:
                postmaster = int((pg.pgdata / "postmaster.pid").read_text().split()[0])
                pids = {"gateway": gateway.pid, "postgres": postmaster}
                ok = await bench_search(port, base, args, pids, figures)
            if args.worklist:
                rounds = args.worklist_rounds
                ok &= await bench_worklist(
                    root, env, base, PASSWORD, args.worklist, rounds, gateway.pid, figures
                )
            return 0 if ok else 1
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(15)
            pg.stop("immediate")
            nats.stop()


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and of its live children (PostgreSQL: the postmaster and the
    backends that serve the gateway's pooled connections)."""
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            total += sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of the gateway, PostgreSQL and this load generator."""
    return {
        "gateway": cpu_seconds(pids["gateway"]),
        "postgres": process_tree_cpu(pids["postgres"]),
        "client": time.process_time(),
    }


async def bench_search(
    port: int, base: str, args: argparse.Namespace, pids: dict[str, int], figures: Figures
) -> bool:
    """Local search at 100k studies with N clients against the health endpoint. The CPU that
    each request costs the gateway, PostgreSQL and the load generator is printed beside the
    times: with N clients on a small box the queueing is that CPU (Little's law)."""
    token = await login_token(base)
    await drive(port, token, "/api/v1/studies", 4, 2.0, True)  # warm-up
    print("one client (service time without queueing):")
    one = summary("  search", *await drive(port, token, "/api/v1/studies", 1, 3.0, True))
    figures.put("search", "one_client", "search", one)
    one = summary("  health", *await drive(port, token, "/api/health", 1, 3.0, False))
    figures.put("search", "one_client", "health", one)
    print(f"{args.clients} concurrent clients, {args.seconds:g} s per endpoint:")
    results = {}
    for name, path, is_search in (
        ("search /api/v1/studies", "/api/v1/studies", True),
        ("health /api/health", "/api/health", False),
    ):
        cpu0 = cpu_now(pids)
        kinds: dict[str, list[float]] = {}
        run = await drive(port, token, path, args.clients, args.seconds, is_search, kinds)
        row = summary("  " + name, *run)
        spent = {k: (v - cpu0[k]) * 1000 / max(1, row["n"]) for k, v in cpu_now(pids).items()}
        row["cpu_ms"] = spent["gateway"]
        row["postgres_cpu_ms"] = spent["postgres"]
        row["client_cpu_ms"] = spent["client"]
        print(
            f"    CPU per request: gateway {spent['gateway']:.2f} ms, PostgreSQL "
            f"{spent['postgres']:.2f} ms, load generator {spent['client']:.2f} ms"
        )
        results[is_search] = row
        figures.put("search", "clients", "search" if is_search else "health", row)
        if is_search:
            # Which searches make the tail: each kind of the mix on its own.
            for kind, lat in sorted(kinds.items()):
                figures.put("search", "kinds", kind, summary(f"    {kind}", lat, 0, run[2]))
    search, health = results[True], results[False]
    figures.put("search", "studies", args.studies)
    figures.put("search", "client_count", args.clients)
    figures.put("search", "ratio_p99_search_to_health", search["p99"] / health["p99"])
    print(
        f"ratio search/health: p50 {search['p50'] / health['p50']:.2f}x, "
        f"p99 {search['p99'] / health['p99']:.2f}x, "
        f"rps {search['rps'] / health['rps']:.2f}x"
    )
    verdict = "PASS" if search["p99"] < 100 and not search["errors"] else "FAIL"
    print(f"target search p99 < 100 ms: {verdict} ({search['p99']:.1f} ms)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return verdict == "PASS"


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
