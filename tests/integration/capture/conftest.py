"""Capture integration helpers: run `python -m cinebridge_capture` per room against the test
run's NATS and PostgreSQL, talk to it over the bus, and serve network video with ffmpeg."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import EmbeddedNats, free_port
from cinebridge_common.messages.capture import (
    CaptureCommand,
    CaptureCommandReply,
    CaptureStatusReply,
    CaptureStatusRequest,
)
from cinebridge_testkit import require_tool, wait_for

from .purge_station import Station, open_station


@dataclass
class CaptureProcess:
    room: str
    sources: list[dict[str, Any]]
    nats_url: str
    database_url: str
    media_root: Path
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    preview_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            {
                "CB_NATS_URL": self.nats_url,
                "CB_DATABASE_URL": self.database_url,
                "CB_MEDIA_ROOT": str(self.media_root),
                "CB_INSTANCE_ID": f"test-{self.room}",
                "CB_HEALTH_PORT": str(self.health_port),
                "CB_CAPTURE_ROOM": self.room,
                "CB_CAPTURE_SOURCES": json.dumps(self.sources),
                "CB_CAPTURE_PREVIEW_PORT": str(self.preview_port),
                "CB_CAPTURE_DISK_RESERVE_BYTES": "1048576",
                "CB_CAPTURE_ENCODER_THREADS": "2",
                "CB_LOG_LEVEL": "INFO",
            }
        )
        env.update(self.extra_env)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cinebridge_capture"], env=env, stdout=log, stderr=log
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def thread_nice(self) -> dict[str, set[int]]:
        """Niceness of the process's threads, by thread name (FFmpeg names its own)."""
        assert self.proc is not None
        names: dict[str, set[int]] = {}
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                name = (task / "comm").read_text().strip()
                nice = int((task / "stat").read_text().rsplit(")", 1)[1].split()[16])
                names.setdefault(name, set()).add(nice)
        return names

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class CaptureClient:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def command(self, room: str, source: str, action: str, **kw: Any) -> CaptureCommandReply:
        return await self.bus.request(
            CaptureCommand(room=room, source=source, action=action, **kw),  # type: ignore[arg-type]
            CaptureCommandReply,
            timeout_s=20,
        )

    async def status(self, room: str) -> CaptureStatusReply:
        return await self.bus.request(CaptureStatusRequest(room=room), CaptureStatusReply, 5)

    async def wait_signal(self, proc: CaptureProcess, timeout_s: float = 120) -> CaptureStatusReply:
        async def ready() -> CaptureStatusReply | None:
            if proc.proc is not None and proc.proc.poll() is not None:
                raise AssertionError(f"capture exited:\n{proc.log()}")
            try:
                reply = await self.status(proc.room)
            except Exception:
                return None
            return reply if reply.ok and all(s.signal for s in reply.sources) else None

        return await wait_for(ready, timeout_s, 0.2, what=f"room {proc.room} with signal")


@pytest.fixture
def capture_factory(nats_url: str, database_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[CaptureProcess] = []

    def make(room: str, sources: list[dict[str, Any]], **env: str) -> CaptureProcess:
        proc = CaptureProcess(
            room,
            sources,
            nats_url,
            database_url,
            tmp_path / "media",
            tmp_path / f"capture-{room}.log",
            extra_env=env,
        )
        proc.start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[CaptureClient]:
    bus = await Bus.connect(nats_url, "capture-test")
    await bus.ensure_streams()
    yield CaptureClient(bus)
    await bus.close()


class UdpSender:
    """A local ffmpeg serving an H.264 test pattern as MPEG-TS over UDP on loopback."""

    def __init__(self, port: int, size: str = "1280x720", rate: int = 30) -> None:
        self.port = port
        self.size = size
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"udp://127.0.0.1:{self.port}"

    def start(self) -> None:
        ffmpeg = require_tool("ffmpeg")
        self.proc = subprocess.Popen(
            [
                ffmpeg,
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={self.size}:rate={self.rate}",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-profile:v",
                "high",
                "-x264-params",
                "8x8dct=1",
                "-g",
                str(self.rate),
                "-pix_fmt",
                "yuv420p",
                "-f",
                "mpegts",
                f"udp://127.0.0.1:{self.port}?pkt_size=1316",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def udp_sender() -> Iterator[UdpSender]:
    sender = UdpSender(free_port())
    yield sender
    sender.stop()


def monotonic() -> float:
    return time.monotonic()


@pytest.fixture
async def station(
    capture_factory: Any,
    client: CaptureClient,
    nats_server: EmbeddedNats,
    database_url: str,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
) -> AsyncIterator[Station]:
    """The purge tests' station (purge_station.py): capture, converter, sender, archive,
    gateway."""
    async with open_station(
        capture_factory, client, nats_server, database_url, db_pool, tmp_path
    ) as st:
        yield st
