"""Durable pull consumers: their specification, and bringing the server's durable to it.

`apply_consumer` creates the durable, or updates an existing one in place where the server allows
(ack wait, max deliver, max ack pending, filter). Where a durable started reading is fixed at
creation and means nothing later, so the server's own start is kept. A change the server refuses
to apply in place (an immutable field such as the ack policy) recreates the durable from its ack
floor: nothing acknowledged is delivered again in bulk, nothing unacknowledged is skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from .logging import kv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer. Several processes with the same durable share its work."""

    stream: str
    durable: str
    filter_subject: str
    max_deliver: int = 8
    ack_wait_s: float = 30.0
    #: nak delays by delivery attempt (last one repeats), used when the handler gives none.
    backoff_s: Sequence[float] = (1.0, 5.0, 15.0, 30.0, 60.0)
    max_ack_pending: int = 1000
    batch: int = 10
    workers: int = 1
    deliver_new_only: bool = False


def consumer_config(spec: ConsumerSpec) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=spec.durable,
        filter_subject=spec.filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        deliver_policy=DeliverPolicy.NEW if spec.deliver_new_only else DeliverPolicy.ALL,
    )


def settings_of(config: ConsumerConfig) -> tuple[object, ...]:
    """The parts of a consumer's configuration that CineBridge sets (for change detection)."""
    return (
        config.filter_subject,
        config.ack_policy,
        float(config.ack_wait or 0),
        config.max_deliver,
        config.max_ack_pending,
        config.deliver_policy,
    )


async def apply_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    """Create or update the durable of `spec` (see the module docstring); raises the server's
    APIError when it cannot be created at all (e.g. its stream does not exist)."""
    config = consumer_config(spec)
    try:
        existing: ConsumerInfo | None = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        existing = None
    if existing is not None:
        config = dataclasses.replace(
            config,
            deliver_policy=existing.config.deliver_policy,
            opt_start_seq=existing.config.opt_start_seq,
            opt_start_time=existing.config.opt_start_time,
        )
        if settings_of(existing.config) == settings_of(config):
            return
    try:
        await js.add_consumer(spec.stream, config)
    except APIError as exc:  # "ack policy can not be updated" is a 500, others a 400
        if existing is None:
            raise
        await _recreate(js, spec, existing, exc)
        return
    if existing is not None:
        log.info(
            "consumer configuration updated",
            extra=kv(durable=spec.durable, was=settings_of(existing.config)),
        )


async def _recreate(
    js: JetStreamContext, spec: ConsumerSpec, existing: ConsumerInfo, refused: Exception
) -> None:
    floor = existing.ack_floor.stream_seq if existing.ack_floor is not None else 0
    log.warning(
        "consumer configuration cannot be updated in place; recreating from its ack floor",
        extra=kv(durable=spec.durable, ack_floor=floor, error=repr(refused)),
    )
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(spec.stream, spec.durable)
    config = dataclasses.replace(
        consumer_config(spec),
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=(floor or 0) + 1,
    )
    await js.add_consumer(spec.stream, config)
