"""Bus round trip against a real nats-server: publish with PubAck, durable consume, ack."""

from __future__ import annotations

import asyncio

from cinebridge_common.bus import Bus, ConsumerSpec, Delivery
from cinebridge_common.messages import ForwardStudy


async def test_publish_and_consume(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, "t")
    await bus.ensure_streams()
    got: asyncio.Queue[ForwardStudy] = asyncio.Queue()

    async def handler(msg: ForwardStudy, d: Delivery) -> None:
        await got.put(msg)

    job = ForwardStudy(job_key="k1", study_id="s1", destination_ids=["d1"])
    ack = await bus.publish(job, msg_id="k1")
    assert ack.seq >= 1
    bus.start_consumer(
        ConsumerSpec("CB_JOBS", "smoke", ForwardStudy.subject), ForwardStudy, handler
    )
    msg = await asyncio.wait_for(got.get(), 10)
    assert msg.study_id == "s1" and msg.destination_ids == ["d1"]
    await bus.close()
