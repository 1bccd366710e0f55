"""Event-driven reactors for pynetdicom's acceptor threads (no 1 ms polling).

pynetdicom's association thread wakes every millisecond to look for a decoded DIMSE message,
and its DUL thread sleeps 1 ms whenever its queues are empty. Each C-STORE then waits on a few
such sleeps, and every idle association burns CPU (2 x 1000 wake-ups/s). Here the association
thread sleeps on an Event set by its queues, and the DUL thread blocks in `select()` on the
socket plus a wake-up socket written whenever something is queued for sending
(`GuardedSocket.ready`). Timers (ARTIM, idle) are still checked at least every `TICK_S`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.association import LOGGER, Association

#: Longest a reactor sleeps without news; bounds timer and kill latency.
TICK_S = 0.2


class WakingQueue(queue.Queue[Any]):
    """A Queue that calls `wake` after every put."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class FastAssociation(Association):
    """Acceptor whose reactor sleeps until a DIMSE message or an ACSE primitive arrives."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._work = threading.Event()
        self.dimse.msg_queue = WakingQueue(self._work.set)
        self.dul.to_user_queue = WakingQueue(self._work.set)
        # The DUL blocks in GuardedSocket.ready() instead of sleeping between polls.
        self.dul._run_loop_delay = 0.0
        # pynetdicom makes the DUL thread non-daemon: one stuck peer would then keep the
        # process alive after SIGTERM. Nothing is acknowledged before it is stored, so an
        # association cut by process exit loses nothing the peer was told is safe.
        self.dul.daemon = True

    def kill(self) -> None:
        """Wake the DUL out of its select() so that it notices the kill at once."""
        wake = getattr(self.dul.socket, "wake", None)
        if wake is not None:
            wake()
        super().kill()

    def _run_reactor(self) -> None:
        """pynetdicom 3.0.4 Association._run_reactor with the 1 ms sleep replaced by a wait."""
        self._is_paused = False
        while not self._kill:
            self._work.wait(TICK_S)
            self._work.clear()
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                self._work.set()  # more may be queued
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                LOGGER.error("Network timeout reached")
                self.abort()
                self.kill()
                return
