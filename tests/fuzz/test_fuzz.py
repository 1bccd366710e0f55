"""Fuzz every decoder of peer bytes (tests/fuzz/targets.py) with hypothesis.

Each target first replays its kept corpus (tests/fuzz/corpus/<target>/: the SCP's malformed-PDU
corpus and valid messages), then runs generated inputs (corpus entries mutated and spliced, and
plain random bytes, from seeds hypothesis draws) for `--fuzz-seconds` (`scripts/fuzz.py
--seconds 60` in CI). Every input must end in a return or the decoder's documented error,
within 1 s of this process's CPU time (CPU, not wall-clock: a loaded machine does not make an
input slow), with at most 32 MiB allocated at its peak (tracemalloc). A failure names the
input's first bytes and hypothesis prints the draw that reproduces it; add the input to the
corpus once it is fixed.
"""

from __future__ import annotations

import random
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

CORPUS = Path(__file__).parent / "corpus"
NAMES = ["associate_rq", "p_data", "command_set", "dataset_walk", "worklist_json"]
CPU_LIMIT_S = 1.0
MEMORY_LIMIT = 32 << 20
MAX_INPUT = 1 << 16
#: Hypothesis draws per run and inputs per draw; runs repeat until the time budget is spent.
BATCH = 20
PER_DRAW = 50
INTERESTING_16 = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
INTERESTING_32 = (0, 1, 2, 4, 6, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0x10000)


def corpus(name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((CORPUS / name).glob("*.bin"))]


def mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Byte-level mutations of the kinds that break length-prefixed formats."""
    buf = bytearray(data)
    for kind, position, value in ops:
        at = position % (len(buf) + 1)
        if kind == 0 and buf:
            buf[at % len(buf)] ^= 1 << (value % 8)
        elif kind == 1 and buf:
            buf[at % len(buf)] = value & 0xFF
        elif kind == 2:
            buf[at:at] = value.to_bytes(4, "big")[: 1 + value % 4]
        elif kind == 3:
            del buf[at : at + 1 + value % 16]
        elif kind == 4:
            del buf[at:]
        elif kind == 5:
            order = "big" if value & 1 else "little"
            buf[at : at + 2] = INTERESTING_16[value % len(INTERESTING_16)].to_bytes(2, order)
        elif kind == 6:
            order = "big" if value & 1 else "little"
            buf[at : at + 4] = INTERESTING_32[value % len(INTERESTING_32)].to_bytes(4, order)
        else:
            buf[at:at] = buf[at : at + 1 + value % 64]
    return bytes(buf[:MAX_INPUT])


def derived(seeds: list[bytes], rng_seed: int, count: int) -> Iterator[bytes]:
    """`count` inputs from one seed of randomness: corpus entries mutated or spliced, and plain
    random bytes. Hypothesis draws the seed (cheap to draw, printed on failure, so a failing
    input is reproduced from it); the byte work is plain Python, many inputs per draw."""
    rng = random.Random(rng_seed)
    for _ in range(count):
        roll = rng.random()
        if roll < 0.1:
            yield rng.randbytes(rng.randint(0, 2048))
        elif roll < 0.25:
            a, b = rng.choice(seeds), rng.choice(seeds)
            yield (a[: rng.randint(0, len(a))] + b[rng.randint(0, len(b)) :])[:MAX_INPUT]
        else:
            ops = [
                (rng.randrange(8), rng.randrange(MAX_INPUT), rng.getrandbits(32))
                for _ in range(rng.randint(1, 8))
            ]
            yield mutate(rng.choice(seeds), ops)


class Bounds:
    """Runs one input under the CPU-time and memory bounds; counts inputs. The CPU time is the
    calling thread's (the targets decode in it): the whole suite runs in one process, whose
    other threads (peers and services of earlier tests winding down) must not count against an
    input."""

    def __init__(self, target: Callable[[bytes], None]) -> None:
        self.target = target
        self.count = 0

    def __call__(self, data: bytes) -> None:
        tracemalloc.start()  # only around the target: tracing the generator costs 10x
        try:
            started = time.thread_time()
            self.target(data)
            cpu = time.thread_time() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.count += 1
        assert cpu < CPU_LIMIT_S, f"{cpu:.2f} s of CPU for {len(data)} bytes: {data[:64]!r}"
        assert peak < MEMORY_LIMIT, f"{peak} bytes allocated for {len(data)}: {data[:64]!r}"


@pytest.mark.parametrize("name", NAMES)
def test_corpus_replays_within_bounds(name: str, targets: ModuleType) -> None:
    seeds = corpus(name)
    assert len(seeds) >= 10, f"corpus/{name} has {len(seeds)} entries: run scripts/fuzz.py --seed"
    bounds = Bounds(targets.TARGETS[name]())
    for data in seeds:
        bounds(data)
    assert bounds.count == len(seeds)


@pytest.mark.parametrize("name", NAMES)
def test_generated_inputs_within_bounds(
    name: str, targets: ModuleType, fuzz_seconds: float
) -> None:
    bounds = Bounds(targets.TARGETS[name]())
    seeds = corpus(name)

    @settings(
        max_examples=BATCH,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.integers(0, 2**64 - 1))
    def run(rng_seed: int) -> None:
        for data in derived(seeds, rng_seed, PER_DRAW):
            bounds(data)

    started = time.monotonic()
    run()  # at least one batch, also without a time budget
    while time.monotonic() - started < fuzz_seconds:
        run()
    print(f"{name}: {bounds.count} inputs in {time.monotonic() - started:.0f} s")
    assert bounds.count >= BATCH * PER_DRAW // 2  # the target ran, not only hypothesis
