"""Per-service liveness, readiness and Prometheus metrics over a tiny HTTP endpoint.

`/healthz` is liveness: 200 while the process answers at all (a container orchestrator restarts
it otherwise). `/readyz` is readiness: 200 only when the service is up and its dependencies
(PostgreSQL, NATS) are reachable, 503 with the state of each otherwise. Both bodies are the
service's status JSON. `/metrics` is the Prometheus text format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class HealthServer:
    """Serves GET /healthz, /readyz (JSON from `status()`) and /metrics; nothing else."""

    def __init__(self, host: str, port: int, status: Callable[[], dict[str, object]]) -> None:
        self.host = host
        self.port = port
        self.status = status
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            # Drain headers (bounded) so the client sees a clean response.
            for _ in range(100):
                header = await asyncio.wait_for(reader.readline(), 5)
                if header in (b"\r\n", b"\n", b""):
                    break
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if path in ("/healthz", "/readyz"):
                status = self.status()
                body = json.dumps(status, default=str).encode()
                ok = path == "/healthz" or status.get("ready") is True
                code = "200 OK" if ok else "503 Service Unavailable"
                ctype = "application/json"
            elif path == "/metrics":
                body, code, ctype = generate_latest(REGISTRY), "200 OK", CONTENT_TYPE_LATEST
            else:
                body, code, ctype = b'{"error":"not found"}', "404 Not Found", "application/json"
            writer.write(
                f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
