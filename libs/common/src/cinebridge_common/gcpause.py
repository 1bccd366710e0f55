"""A bounded pause of the cyclic garbage collector while large acyclic trees are built."""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterator


class CyclicGcPause:
    """Python's cyclic garbage collector off while large acyclic data is built: only where
    `bench/worklist.py` proves it in the same run, the worklist query's reading and decoding
    (`cinebridge_worklist.scu.find_worklist`) and the gateway's parsing of the worklist reply
    (`cinebridge_gateway.worklist_pages`). 1,000 entries: query CPU 235 ms paused, 340 ms not
    (findscu ratio 1.11 vs 0.91); the gateway's parse 92 ms vs 286 ms. Generic bus replies
    (`rpc.decode`) do not pause it.

    A 1,000-entry worklist answer builds ~130,000 dicts and lists (DICOM JSON) that stay
    alive in the result; the collector, triggered by those allocations, ran full collections
    over the whole heap and the growing result and took half of the decoding time. The trees
    hold no reference cycles, so reference counting frees them exactly as before. The pause
    nests across concurrent users (threads) and is bounded: a query lasts at most its
    deadlines (statement Table 26), a parse is short, and when pauses overlap without a break
    for longer than `max_pause_s`, the one that ends runs a full collection (so cyclic garbage
    made elsewhere in the process meanwhile cannot pile up).

    On resuming, `gc.freeze()` + `gc.unfreeze()` (documented: the objects go "back into the
    oldest generation") file the young objects, the result among them, with the long-lived
    ones; otherwise the first allocation after `gc.enable()` would scan all 130,000 at once
    (25 ms). Cyclic garbage made meanwhile elsewhere is still found, at the next full
    collection. Nothing else in the services uses `gc.freeze`.
    """

    def __init__(self, max_pause_s: float = 5.0) -> None:
        self.max_pause_s = max_pause_s
        self._lock = threading.Lock()
        self._active = 0
        self._was_enabled = False
        self._since = 0.0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._was_enabled = gc.isenabled()
                self._since = time.monotonic()
                gc.disable()
            self._active += 1
        try:
            yield
        finally:
            overdue = False
            with self._lock:
                self._active -= 1
                if self._active == 0 and self._was_enabled:
                    gc.freeze()
                    gc.unfreeze()
                    gc.enable()
                elif self._was_enabled and time.monotonic() - self._since > self.max_pause_s:
                    overdue, self._since = True, time.monotonic()
            if overdue:
                gc.collect()  # runs while disabled too; outside the lock


gc_paused = CyclicGcPause()
