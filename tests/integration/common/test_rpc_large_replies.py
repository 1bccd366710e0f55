"""Replies larger than one bus message (max_payload 1 MB) on a real nats-server (`rpc`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import nats
import pytest
from cinebridge_common import rpc
from cinebridge_common.bus import Bus, BusError
from cinebridge_common.messages.base import Reply, Request

pytestmark = pytest.mark.integration


class Fill(Request):
    subject: ClassVar[str] = "cb.rpc.test.fill"
    size: int


class FillReply(Reply):
    subject: ClassVar[str] = "cb.rpc.test.reply"
    blocks: list[str] = []


async def _fill(req: Fill) -> FillReply:
    # Distinct blocks: a chunk lost or swapped would show in the joined reply.
    return FillReply(blocks=[f"{n:08d}" + "x" * 992 for n in range(req.size // 1000)])


async def _served(nats_url: str) -> tuple[Bus, Bus]:
    server = await Bus.connect(nats_url, "rpc-server")
    client = await Bus.connect(nats_url, "rpc-client")
    await server.serve(Fill, _fill)
    return server, client


async def _raw_request(client: Bus, request: Fill) -> Any:
    """A plain nats-py request (no chunk header). On a heavily loaded CI machine the server's
    interest was once not yet visible to the other connection; the request waits it out."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        try:
            return await client.nc.request(request.subject, request.to_bytes(), timeout=30)
        except nats.errors.NoRespondersError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_reply_of_many_megabytes_arrives_whole(nats_url: str) -> None:
    server, client = await _served(nats_url)
    try:
        assert client.nc.max_payload <= 1 << 20  # the limit the chunks exist for
        reply = await client.request(Fill(size=5_000_000), FillReply, timeout_s=30)
        assert reply.ok and len(reply.blocks) == 5000
        assert [b[:8] for b in reply.blocks] == [f"{n:08d}" for n in range(5000)]
        small = await client.request(Fill(size=10_000), FillReply, timeout_s=30)
        assert len(small.blocks) == 10
    finally:
        await client.close()
        await server.close()


async def test_a_requester_without_chunks_gets_the_reason(nats_url: str) -> None:
    server, client = await _served(nats_url)
    try:
        raw = await _raw_request(client, Fill(size=3_000_000))
        answer = json.loads(raw.data)
        assert answer["ok"] is False
        assert "too large" in answer["error"] and "narrow the request" in answer["error"]
    finally:
        await client.close()
        await server.close()


async def test_a_reply_over_the_limit_is_an_error_reply(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rpc, "MAX_REPLY_BYTES", 2_000_000)
    server, client = await _served(nats_url)
    try:
        reply = await client.request(Fill(size=3_000_000), FillReply, timeout_s=30)
        assert not reply.ok and reply.error is not None
        assert "too large" in reply.error and "MiB limit" in reply.error
    finally:
        await client.close()
        await server.close()


async def test_a_failure_mid_reply_ends_it_with_the_reason(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, client = await _served(nats_url)
    real_publish = server.nc.publish
    sent: list[str] = []

    async def failing_publish(subject: str, payload: bytes = b"", **kw: object) -> None:
        headers = kw.get("headers")
        if isinstance(headers, dict) and headers.get(rpc.CHUNK, "").startswith("2/"):
            raise ConnectionResetError("simulated")
        if isinstance(headers, dict) and rpc.CHUNK in headers:
            sent.append(headers[rpc.CHUNK])
        await real_publish(subject, payload, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(server.nc, "publish", failing_publish)
    try:
        reply = await client.request(Fill(size=4_000_000), FillReply, timeout_s=30)
        assert not reply.ok and reply.error is not None
        assert "could not be sent" in reply.error and "ConnectionResetError" in reply.error
        assert sent == ["0/4", "1/4"]  # two chunks went out before the failure
    finally:
        await client.close()
        await server.close()


async def test_no_responder_is_named(nats_url: str) -> None:
    client = await Bus.connect(nats_url, "rpc-client")
    try:
        with pytest.raises(BusError, match=r"no service answers cb\.rpc\.test\.fill"):
            await client.request(Fill(size=10), FillReply, timeout_s=5)
    finally:
        await client.close()


async def test_a_responder_that_just_subscribed_is_found(nats_url: str) -> None:
    """Right after a fresh subscribe (flushed), a request from another connection was told
    "no responders" about once in 25 tries; the request asks again within its grace period."""
    for _ in range(100):
        server, client = await _served(nats_url)
        try:
            reply = await client.request(Fill(size=1000), FillReply, timeout_s=10)
            assert reply.ok and len(reply.blocks) == 1
        finally:
            await client.close()
            await server.close()
