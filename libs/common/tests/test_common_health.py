"""The per-service health endpoint: /healthz liveness, /readyz readiness, /metrics."""

from __future__ import annotations

import asyncio
import json

from cinebridge_common.health import HealthServer


async def _get(port: int, path: str) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode().splitlines()[0], body


async def test_readyz_reflects_readiness_healthz_liveness_and_metrics_are_served() -> None:
    state: dict[str, object] = {"state": "up", "ready": False, "service": "scp"}
    server = HealthServer("127.0.0.1", 0, lambda: dict(state))
    port = await server.start()
    try:
        status, body = await _get(port, "/readyz")
        assert status.endswith("503 Service Unavailable") and json.loads(body)["ready"] is False
        status, body = await _get(port, "/healthz")
        assert status.endswith("200 OK"), "alive though not ready"
        state["ready"] = True
        status, body = await _get(port, "/readyz")
        assert status.endswith("200 OK") and json.loads(body)["service"] == "scp"
        status, body = await _get(port, "/metrics")
        assert status.endswith("200 OK") and b"python_info" in body
        status, _ = await _get(port, "/../etc/passwd")
        assert status.endswith("404 Not Found")
    finally:
        await server.stop()
