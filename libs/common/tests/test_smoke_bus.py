"""Bus round trip against a real nats-server: publish with PubAck, durable consume, ack."""

from __future__ import annotations

import asyncio

from cinebridge_common.bus import Bus, ConsumerSpec, Delivery
from cinebridge_common.messages import SendInstance


async def test_publish_and_consume(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, "t")
    await bus.ensure_streams()
    got: asyncio.Queue[SendInstance] = asyncio.Queue()

    async def handler(msg: SendInstance, d: Delivery) -> None:
        await got.put(msg)

    ack = await bus.publish(SendInstance(job_key="k1", delivery_id="d1"), msg_id="k1")
    assert ack.seq >= 1
    bus.start_consumer(
        ConsumerSpec("CB_JOBS", "smoke", "cb.job.sender.send"), SendInstance, handler
    )
    msg = await asyncio.wait_for(got.get(), 10)
    assert msg.delivery_id == "d1"
    await bus.close()
