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

Then where the time goes: each study's chain read back from the rows its services wrote
(`STAGES`, docs/benchmarks.md), p50 and p95 of every stage.

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
from cinebridge_converter.settings import ConverterSettings
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


#: The chain from Save to committed, as checkpoints read from the rows the services write
#: (each a database time; `now()` is the start of the writing transaction): the gateway's
#: outbox row of the convert job and the relay's claim of it, the converter's job lease taken
#: (its start: the lease's end less its length), the instance row, the relay's claim of its
#: InstanceCreated, the sender's record of the instance, the relay's claim of the send job,
#: the C-STORE attempt, the delivery sent and committed. A checkpoint a tree does not write
#: is skipped: its stage joins the next one.
CHECKPOINTS = """
SELECT m.study_id::text AS study,
       extract(epoch FROM max(job.created_at))::float8 AS job_queued,
       extract(epoch FROM max(job.published_at))::float8 AS job_published,
       extract(epoch FROM max(cj.lease_until) - make_interval(secs => $2))::float8
           AS conversion_started,
       extract(epoch FROM max(i.created_at))::float8 AS instance_written,
       extract(epoch FROM max(created.published_at))::float8 AS instance_published,
       extract(epoch FROM max(oi.created_at))::float8 AS instance_recorded,
       extract(epoch FROM max(send.published_at))::float8 AS send_published,
       extract(epoch FROM max(a.started_at))::float8 AS attempt_started,
       extract(epoch FROM max(d.delivered_at))::float8 AS sent,
       extract(epoch FROM max(d.committed_at))::float8 AS committed
FROM media m
JOIN instances i ON i.media_id = m.id
LEFT JOIN LATERAL (SELECT min(created_at) AS created_at, min(published_at) AS published_at
                   FROM outbox WHERE msg_id LIKE 'convert-' || m.id::text || ':%') job ON true
LEFT JOIN converter_jobs cj ON cj.media_id = m.id
LEFT JOIN outbox created ON created.msg_id = 'instance-created-' || i.sop_instance_uid
LEFT JOIN outgoing_instances oi ON oi.id = i.id
LEFT JOIN deliveries d ON d.instance_id = i.id
LEFT JOIN LATERAL (SELECT min(published_at) AS published_at FROM outbox
                   WHERE msg_id LIKE 'send-' || d.id::text || '-%') send ON true
LEFT JOIN LATERAL (SELECT min(started_at) AS started_at FROM delivery_attempts
                   WHERE delivery_id = d.id) a ON true
WHERE m.study_id = ANY($1::uuid[])
GROUP BY m.study_id
"""

#: (stage, its start, its end) in chain order; the start "save" is the bench's own clock.
STAGES = [
    ("save request", "save", "job_queued"),
    ("relay: convert job", "job_queued", "job_published"),
    ("converter pickup", "job_published", "conversion_started"),
    ("conversion", "conversion_started", "instance_written"),
    ("commit + relay: instance", "instance_written", "instance_published"),
    ("sender: record instance", "instance_published", "instance_recorded"),
    ("relay: send job", "instance_recorded", "send_published"),
    ("sender pickup", "send_published", "attempt_started"),
    ("C-STORE", "attempt_started", "sent"),
    ("commitment", "sent", "committed"),
]


async def study_checkpoints(
    dsn: str, saved: dict[str, float], lease_s: float
) -> list[dict[str, float | None]]:
    """Per study its checkpoints (epoch seconds; None where a tree writes none)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(CHECKPOINTS, list(saved), lease_s)
    finally:
        await conn.close()
    return [{**dict(r), "save": saved[r["study"]]} for r in rows]


def stage_times(checkpoints: list[dict[str, float | None]]) -> dict[str, list[float]]:
    """Seconds per stage over the studies; a stage whose end is missing joins the next
    (its start carries over), so the stages always add up to Save -> committed."""
    out: dict[str, list[float]] = {}
    for study in checkpoints:
        start_label, start = None, study["save"]
        for label, _begin, end in STAGES:
            at = study.get(end)
            if at is None or start is None:
                start_label = start_label or label
                continue
            name = label if start_label is None else f"{start_label} .. {label}"
            out.setdefault(name, []).append(at - start)
            start_label, start = None, at
    return out


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
    parser.add_argument(
        "--log",
        type=Path,
        help="copy the embedded run's log here (with CB_LOG_LEVEL=DEBUG it holds each "
        "consumer's 'message in hand' and the converter's 'conversion timed' lines)",
    )
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
            lease_s = float(ConverterSettings.model_fields["converter_job_lease_s"].default)
            stages = stage_times(asyncio.run(study_checkpoints(dsn, saved, lease_s)))
            to_sent = [times[s]["sent_at"] - saved[s] for s in ids]
            to_committed = [times[s]["committed_at"] - saved[s] for s in ids]
            files = asyncio.run(study_files(dsn, ids))
            media = run.run_dir / "media"
            studies = [[media / rel for rel in files[s]] for s in ids]
            orthanc.clear()
            dcmtk = storescu_each(storescu_bin, dicom_port, studies)
        finally:
            orthanc.stop()
            if args.log is not None:
                shutil.copyfile(run.log_path, args.log)
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
    print_stages(figures, stages)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def print_stages(figures: Figures, stages: dict[str, list[float]]) -> None:
    """Each stage's p50 and p95, and its share of the mean Save -> committed (the means add
    up, so the shares do: on a loaded machine compare these rather than the milliseconds)."""
    total = sum(statistics.fmean(v) for v in stages.values()) or 1.0
    print(f"{'stage':<34} {'n':>4} {'p50 ms':>9} {'p95 ms':>9} {'share':>6}")
    for name, values in stages.items():
        p50, p95 = percentile(values, 50), percentile(values, 95)
        share = statistics.fmean(values) / total
        print(f"{name:<34} {len(values):>4} {p50 * 1000:9.1f} {p95 * 1000:9.1f} {share:6.1%}")
        key = name.replace(" .. ", "_to_").replace(": ", "_").replace(" + ", "_")
        key = key.replace(" ", "_").replace("-", "_").lower()
        figures.put("stages", key, "p50_s", p50)
        figures.put("stages", key, "p95_s", p95)
        figures.put("stages", key, "share", share)


if __name__ == "__main__":
    main()
