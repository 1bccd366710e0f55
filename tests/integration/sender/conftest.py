"""Fixtures of the sender's integration tests: a NATS of their own, the sender harness, a bus."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.embedded import EmbeddedNats
from cinebridge_common.store import MediaStore
from cinebridge_testkit.sender_harness import SenderHarness


@pytest.fixture
def harness(own_nats: EmbeddedNats, database_url: str, tmp_path: Path) -> Iterator[SenderHarness]:
    h = SenderHarness(own_nats, database_url, MediaStore(tmp_path / "media"), tmp_path)
    yield h
    h.stop()


@pytest.fixture
async def bus(own_nats: EmbeddedNats) -> AsyncIterator[Bus]:
    b = await Bus.connect(own_nats.url, "sender-test")
    await b.ensure_streams()
    yield b
    await b.close()
