"""Pre-record buffer: the last N seconds of compressed packets, kept whole GOPs at a time."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class PacketRing:
    """Keeps at least `seconds` of packets, starting at a keyframe, so a recording can begin
    before the button was pressed without re-encoding what is already encoded."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._gops: deque[list[tuple[float, Any]]] = deque()
        self._lock = threading.Lock()

    def add(self, packet: Any, t: float) -> None:
        with self._lock:
            if packet.is_keyframe or not self._gops:
                if not packet.is_keyframe:
                    return  # nothing decodable before the first keyframe
                self._gops.append([])
            self._gops[-1].append((t, packet))
            # Drop the oldest GOP only while the next one still reaches back `seconds`.
            while len(self._gops) > 1 and t - self._gops[1][0][0] >= self.seconds:
                self._gops.popleft()

    def drain(self) -> list[Any]:
        """Every buffered packet, oldest first, starting at a keyframe; the ring is emptied."""
        with self._lock:
            packets = [p for gop in self._gops for _, p in gop]
            self._gops.clear()
            return packets

    def clear(self) -> None:
        with self._lock:
            self._gops.clear()

    @property
    def span_s(self) -> float:
        with self._lock:
            if not self._gops:
                return 0.0
            return self._gops[-1][-1][0] - self._gops[0][0][0]
