"""The sender's own dead letters: an announcement or Forward given up while the database was away
is handled again once it answers, so no instance is left without its deliveries.

JetStream gives a message up after `max_deliver`; the bus then stores a dead letter in `CB_DLQ`.
For the sender's event and Forward consumers that means an instance never got its deliveries
(the send queue cannot find what was never recorded). Letters of those consumers whose
deliveries were exhausted are replayed through the same, idempotent handler here, retried until
the database answers; poison letters stay dead letters. Storage Commitment requests need no
replay: their transactions are rows, which the commitment sweep re-publishes. An archive's
commitment report (`CommitmentReported`) is replayed like an announcement.
"""

from __future__ import annotations

import logging

from cinebridge_common.bus import DLQ, ConsumerSpec, Delivery, Poison, Retry
from cinebridge_common.logging import kv
from cinebridge_common.messages import DeadLetter

from .batches import SenderDeps
from .handlers import CONSUMERS

log = logging.getLogger(__name__)

#: Durables whose exhausted messages are replayed.
REPLAYED = {durable: (model, handler) for _, durable, model, handler in CONSUMERS}
# Commitment transactions are rows too; a Storage Commitment report is an event: replayed.
REPLAYED.pop("sender-commit", None)

#: It never gives up: the DLQ stream keeps the letter for 90 days meanwhile.
DEAD_LETTERS = ConsumerSpec(
    stream=DLQ.name,
    durable="sender-dead-letters",
    filter_subject="cb.dlq.>",
    max_deliver=100_000,
    backoff_s=(1.0, 2.0, 5.0, 10.0, 30.0),
)


async def replay_dead_letter(letter: DeadLetter, delivery: Delivery, deps: SenderDeps) -> None:
    found = REPLAYED.get(letter.consumer)
    if found is None or not letter.reason.startswith("gave up after"):
        return  # another consumer's, or poison: the dead letter is the record
    model, handler = found
    try:
        message = model.from_bytes(letter.payload.encode())
    except ValueError:
        return
    try:
        await handler(message, delivery, deps)
    except Poison as exc:
        log.warning(
            "dead letter replay refused", extra=kv(consumer=letter.consumer, reason=exc.reason)
        )
        return
    except Exception as exc:
        raise Retry(f"dead letter not replayed yet: {type(exc).__name__}: {exc}") from exc
    log.warning("dead letter replayed", extra=kv(consumer=letter.consumer, seq=letter.stream_seq))
