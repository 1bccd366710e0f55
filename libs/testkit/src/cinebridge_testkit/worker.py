"""A minimal durable consumer process for the bus/outbox crash tests (not a service).

    python -m cinebridge_testkit.worker NATS_URL DATABASE_URL MODE

It consumes `cb.job.test.work`; in one transaction it claims the job key and adds one row to
`test_work_done`. MODE `hang-after-commit` sleeps after the commit (before the ack) so a test can
SIGKILL it there; `hang-before-commit` sleeps inside the transaction; `normal` acks at once.
Each delivery is logged to stdout as `delivered <key> <attempt>`.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import ClassVar

from cinebridge_common.bus import Bus, ConsumerSpec, Delivery
from cinebridge_common.db import Connection, create_pool
from cinebridge_common.messages.base import Job


class WorkItem(Job):
    subject: ClassVar[str] = "cb.job.test.work"
    payload: str = ""


SPEC = ConsumerSpec(
    "CB_JOBS", "test-worker", "cb.job.test.work", max_deliver=5, ack_wait_s=2.0, backoff_s=(0.2,)
)


async def claim_once(conn: Connection, consumer: str, key: str) -> bool:
    """Record that `consumer` processed `key`, in the caller's transaction.

    True the first time; False when it was already processed (a redelivery): the handler then
    skips its side effects and acks. Together with the work in the same transaction this makes
    at-least-once delivery do the work exactly once.
    """
    inserted = await conn.fetchval(
        """INSERT INTO test_processed_messages (consumer, msg_key) VALUES ($1, $2)
           ON CONFLICT DO NOTHING RETURNING 1""",
        consumer,
        key,
    )
    return inserted is not None


async def main(nats_url: str, dsn: str, mode: str) -> None:
    pool = await create_pool(dsn)
    await pool.execute(
        "CREATE TABLE IF NOT EXISTS test_work_done (job_key text, at timestamptz DEFAULT now())"
    )
    await pool.execute(
        """CREATE TABLE IF NOT EXISTS test_processed_messages (
               consumer text, msg_key text, PRIMARY KEY (consumer, msg_key))"""
    )
    bus = await Bus.connect(nats_url, "test-worker")
    await bus.ensure_streams()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def handle(job: WorkItem, delivery: Delivery) -> None:
        print(f"delivered {job.job_key} {delivery.attempt}", flush=True)
        async with pool.acquire() as conn, conn.transaction():
            if await claim_once(conn, "test-worker", job.job_key):
                await conn.execute("INSERT INTO test_work_done (job_key) VALUES ($1)", job.job_key)
            if mode == "hang-before-commit":
                print("in-transaction", flush=True)
                await asyncio.sleep(3600)
        if mode == "hang-after-commit":
            print("committed", flush=True)
            await asyncio.sleep(3600)

    bus.start_consumer(SPEC, WorkItem, handle)
    print("ready", flush=True)
    await stop.wait()
    await bus.close()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
