"""Snapshot latency through the real capture service, for bench/capture.py: the service process
with embedded NATS and PostgreSQL, recording a source, asked for snapshots over the bus."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


async def snapshot_latency(count: int, work: Path, url: str) -> list[float]:
    """Snapshot latencies (request over NATS -> JPEG fsync'd and registered), in seconds, of
    the real capture service recording `url`, with embedded NATS and PostgreSQL."""
    from cinebridge_common.bus import Bus
    from cinebridge_common.embedded import EmbeddedNats, EmbeddedPostgres, free_port
    from cinebridge_common.messages.capture import (
        CaptureCommand,
        CaptureCommandReply,
        CaptureStatusReply,
        CaptureStatusRequest,
    )

    shutil.rmtree(work / "nats", ignore_errors=True)
    shutil.rmtree(work / "pg", ignore_errors=True)
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
            CB_CAPTURE_SOURCES=json.dumps([{"name": "hd", "url": url}]),
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


def print_latency(title: str, lat: list[float]) -> dict[str, float]:
    """Print the latency line; return its figures (milliseconds) for --json."""
    q = statistics.quantiles(lat, n=20, method="inclusive")  # never above the max
    print(
        f"\n== snapshot latency {title}, {len(lat)} snapshots, request -> JPEG fsync'd + "
        f"registered: p50 {statistics.median(lat) * 1000:.1f} ms, "
        f"p95 {q[18] * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms"
    )
    return {
        "snapshots": len(lat),
        "p50_ms": statistics.median(lat) * 1000,
        "p95_ms": q[18] * 1000,
        "max_ms": max(lat) * 1000,
    }
