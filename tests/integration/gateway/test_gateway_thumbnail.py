"""Dashboard thumbnails of capture sources, relayed by the gateway from the room's capture
instance (`<upstream>/thumbnail/<source>.jpg`), behind the gateway's own authentication."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import CaptureStatusReply, CaptureStatusRequest, Reply
from cinebridge_common.messages.capture import SourceStatus

pytestmark = pytest.mark.integration

JPEG = b"\xff\xd8\xff\xe0thumbnail-of-cam1\xff\xd9"


@contextlib.asynccontextmanager
async def capture_preview_server() -> AsyncIterator[str]:
    """Like the capture's preview port: cam1 has a thumbnail, cam2 has no picture yet (503)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1]
            status, body, ctype = {
                b"/thumbnail/cam1.jpg": (b"200 OK", JPEG, b"image/jpeg"),
                b"/thumbnail/cam2.jpg": (b"503 Service Unavailable", b"no signal", b"text/plain"),
            }.get(path, (b"404 Not Found", b"not found", b"text/plain"))
            head = f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\n" + head + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_source_thumbnails_are_relayed_for_dashboards(
    gateway_factory: Any, peer_bus: Bus
) -> None:
    async with capture_preview_server() as upstream:
        gw = await gateway_factory(gateway_preview_upstreams={"or1": upstream})

        # or2 has no configured upstream: the capture's status names its preview server.
        async def status(_: CaptureStatusRequest) -> Reply:
            source = SourceStatus(
                name="cam1",
                kind="udp",
                url="udp://x",
                state="idle",
                signal=True,
                preview_url=f"{upstream}/preview/cam1.mjpg",
            )
            return CaptureStatusReply(room="or2", sources=[source])

        await peer_bus.serve(CaptureStatusRequest, status, subject="cb.rpc.capture.or2.status")
        await peer_bus.nc.flush()
        client = await gw.login()
        try:
            base = "/api/v1/rooms"
            ok = await client.get(f"{base}/or1/sources/cam1/thumbnail.jpg")
            assert ok.status_code == 200, ok.text
            assert ok.headers["content-type"] == "image/jpeg" and ok.content == JPEG
            assert ok.headers["cache-control"] == "no-store"
            via_status = await client.get(f"{base}/or2/sources/cam1/thumbnail.jpg")
            assert via_status.status_code == 200 and via_status.content == JPEG
            room = (await client.get(f"{base}/or2")).json()
            assert room["sources"][0]["thumbnail_url"] == f"{base}/or2/sources/cam1/thumbnail.jpg"

            no_picture = await client.get(f"{base}/or1/sources/cam2/thumbnail.jpg")
            assert no_picture.status_code == 503
            assert no_picture.json()["error"]["code"] == "no_signal"
            missing = await client.get(f"{base}/or1/sources/cam3/thumbnail.jpg")
            assert missing.status_code == 502
            assert (await client.get(f"{base}/or1/sources/..%2F/thumbnail.jpg")).status_code in (
                404,
                422,
            )
            async with httpx.AsyncClient(base_url=gw.url) as anonymous:
                denied = await anonymous.get(f"{base}/or1/sources/cam1/thumbnail.jpg")
            assert denied.status_code == 401
        finally:
            await client.aclose()
            for running, task in gateway_factory.running:
                running.ctx.stop.set()
                await asyncio.wait_for(task, 15)
