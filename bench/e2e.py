"""End-to-end benchmark: Snapshot + Save on the embedded run to "sent" and "committed" at Orthanc.

The whole station runs as `make run` does (`cinebridge_common.devrun`, the test-pattern
source), with Orthanc as its only destination, "commitment required" (PS3.4 Annex J): Orthanc
stores what the sender sends, and answers each commitment request with an N-EVENT-REPORT on a
new association to the station's SCP (its DicomModalities knows the station's AE). For each of
N studies: a new room study, one Snapshot, Save; the times from Save to the study's last
delivery "sent" and to its last instance "committed" (the sender's own timestamps), p50 and
p95. Beside them, in the same run: DCMTK `storescu` of the same files into the same Orthanc,
one association per study (Orthanc's own C-STORE time, process start included), and the
ratios (e2e / storescu).

    .venv/bin/python bench/e2e.py                  # 100 studies
    .venv/bin/python bench/e2e.py --studies 5      # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cinebridge_common.devrun import SERVICES
from cinebridge_common.embedded import free_port
from cinebridge_testkit.embedded_run import embedded_runs
from cinebridge_testkit.storage_peers import OrthancPeer
from report import Figures, add_json_flag

ADMIN_PASSWORD = "bench-e2e-admin-password"
STATION_AE = "CINEBRIDGE"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def login(client: httpx.Client) -> None:
    reply = client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    reply.raise_for_status()
    client.headers["X-CSRF-Token"] = reply.json()["csrf_token"]


def one_study(client: httpx.Client) -> tuple[str, float]:
    """Close room1's study, one Snapshot (a new unscheduled study), Save; (study id, wall
    time of the Save)."""
    client.delete("/api/v1/rooms/room1/study").raise_for_status()
    snap = client.post("/api/v1/rooms/room1/sources/endo/snapshot")
    snap.raise_for_status()
    study_id = str(snap.json()["study_id"])
    for _ in range(600):  # the still is announced before it can be saved
        media = client.get(f"/api/v1/studies/{study_id}").json()["media"]
        if media:
            break
        time.sleep(0.05)
    saved_at = time.time()
    client.post(f"/api/v1/studies/{study_id}/save", json={}).raise_for_status()
    return study_id, saved_at


async def study_times(dsn: str, study_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per study: deliveries, how many sent / committed, last delivered_at / committed_at."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT study_id::text AS study, count(*) AS n,
                      count(*) FILTER (WHERE state IN ('sent', 'warning')) AS sent,
                      count(*) FILTER (WHERE commitment = 'committed') AS committed,
                      extract(epoch FROM max(delivered_at))::float8 AS sent_at,
                      extract(epoch FROM max(committed_at))::float8 AS committed_at
               FROM deliveries WHERE study_id = ANY($1::uuid[]) GROUP BY study_id""",
            study_ids,
        )
        return {r["study"]: dict(r) for r in rows}
    finally:
        await conn.close()


async def study_files(dsn: str, study_ids: list[str]) -> dict[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT study_id::text AS study, rel_path FROM outgoing_instances
               WHERE study_id = ANY($1::uuid[]) ORDER BY created_at""",
            study_ids,
        )
    finally:
        await conn.close()
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["study"], []).append(r["rel_path"])
    return out


def storescu_each(binary: str, port: int, studies: list[list[Path]]) -> list[float]:
    """One storescu run (one association) per study, as the sender sends a study; -xy
    proposes JPEG Baseline, the stills' own syntax, so the files go as they are."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    times = []
    for files in studies:
        started = time.perf_counter()
        subprocess.run(
            [binary, "-xy", "-aec", "ORTHANC", "127.0.0.1", str(port), *map(str, files)],
            env=env,
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    add_json_flag(parser)
    args = parser.parse_args()
    figures = Figures("e2e")
    orthanc_bin = shutil.which("Orthanc")
    storescu_bin = shutil.which("storescu")
    if not orthanc_bin or not storescu_bin:
        raise SystemExit("needs Orthanc and DCMTK storescu (apt-get install orthanc dcmtk)")
    work = Path(tempfile.mkdtemp(prefix="cb-bench-e2e-"))
    try:
        measure(args, figures, orthanc_bin, storescu_bin, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures.emit(args.json)


def measure(
    args: argparse.Namespace, figures: Figures, orthanc_bin: str, storescu_bin: str, work: Path
) -> None:
    dicom_port, http_port = free_port(), free_port()
    archive = {
        "name": "orthanc",
        "ae_title": "ORTHANC",
        "host": "127.0.0.1",
        "port": dicom_port,
        "calling_ae_title": STATION_AE,
        "commitment_required": True,
        "commitment_timeout_s": 120,
    }
    env = {
        "CB_GATEWAY_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CB_SENDER_SEED_DESTINATIONS": json.dumps([archive]),
    }
    with embedded_runs(work) as start:
        run = start(env=env)
        ports = run.ports()
        orthanc = OrthancPeer(
            orthanc_bin,
            work / "orthanc",
            dicom_port,
            http_port,
            modalities={"station": [STATION_AE, "127.0.0.1", ports["scp"]]},
        )
        orthanc.start()
        try:
            run.wait(lambda: all(run.healthy(s) for s in SERVICES), 240, "the station is not ready")
            dsn = f"postgresql://cinebridge@127.0.0.1:{ports['postgres']}/cinebridge"
            saved: dict[str, float] = {}
            with httpx.Client(
                base_url=f"http://127.0.0.1:{ports['gateway']}", timeout=60
            ) as client:
                login(client)
                for _ in range(args.studies):
                    study_id, at = one_study(client)
                    saved[study_id] = at
            ids = list(saved)
            deadline = time.monotonic() + args.timeout_s
            times: dict[str, dict[str, Any]] = {}
            while time.monotonic() < deadline:
                times = asyncio.run(study_times(dsn, ids))
                done = [t for t in times.values() if t["committed"] == t["n"] and t["n"] > 0]
                if len(done) == len(ids):
                    break
                time.sleep(0.5)
            else:
                raise SystemExit(
                    f"not all committed in {args.timeout_s:g} s: {times}\n{run.log()[-3000:]}"
                )
            to_sent = [times[s]["sent_at"] - saved[s] for s in ids]
            to_committed = [times[s]["committed_at"] - saved[s] for s in ids]
            files = asyncio.run(study_files(dsn, ids))
            media = run.run_dir / "media"
            studies = [[media / rel for rel in files[s]] for s in ids]
            orthanc.clear()
            dcmtk = storescu_each(storescu_bin, dicom_port, studies)
        finally:
            orthanc.stop()
    rows = [
        ("Save -> sent", to_sent),
        ("Save -> committed", to_committed),
        ("storescu per study", dcmtk),
    ]
    instances = sum(len(s) for s in studies)
    print(
        f"{args.studies} studies, {instances} instances; Orthanc as archive (commitment required)"
    )
    for label, values in rows:
        p50, p95 = percentile(values, 50), percentile(values, 95)
        print(f"{label:<20} p50 {p50 * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms")
        key = label.lower().replace(" -> ", "_to_").replace(" ", "_")
        figures.put(key, "p50_s", p50)
        figures.put(key, "p95_s", p95)
    for label, values in rows[:2]:
        ratio = percentile(values, 50) / percentile(dcmtk, 50)
        print(f"ratio {label} / storescu (p50): {ratio:.2f}")
        figures.put("ratio_p50", label.lower().replace(" -> ", "_to_").replace(" ", "_"), ratio)
    figures.put("studies", args.studies)
    figures.put("instances", instances)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
