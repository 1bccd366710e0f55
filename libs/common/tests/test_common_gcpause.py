"""The bounded cyclic-GC pause (used while a large bus reply is parsed)."""

from __future__ import annotations

import gc
import threading

from cinebridge_common.gcpause import CyclicGcPause, gc_paused


def test_the_gc_pause_lasts_while_any_concurrent_query_runs() -> None:
    first_in, release_first = threading.Event(), threading.Event()
    with gc_paused():
        pass
    assert gc.isenabled()

    def first() -> None:
        with gc_paused():
            first_in.set()
            release_first.wait(5)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_in.wait(5)
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "the second query ended; the first still runs"
    finally:
        release_first.set()
        thread.join(5)
    assert gc.isenabled()


def test_queries_overlapping_without_a_break_still_get_a_full_collection() -> None:
    pause = CyclicGcPause(max_pause_s=0.0)
    generations: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        with pause():
            with pause():
                pass
            # The inner query ended while the outer one kept the pause on past max_pause_s.
            assert generations == [2]
            assert not gc.isenabled()
    finally:
        gc.callbacks.remove(seen)
    assert gc.isenabled()
