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


class GopBuffer:
    """The packets since the last keyframe of a compressed source: what it takes to decode the
    current picture on demand (a snapshot) without decoding every picture as it arrives."""

    def __init__(self, limit: int = 600) -> None:
        self._packets: list[Any] = []
        self._lock = threading.Lock()
        self.limit = limit
        #: Counts keyframes: a picture decoded from the keyframe alone is valid for one serial.
        self.serial = 0
        #: A GOP longer than `limit` packets (sparse keyframes, intra refresh): decoding it on
        #: demand would take too long, so the pipeline decodes such a source continuously.
        self.overflowed = False

    def add(self, packet: Any) -> None:
        with self._lock:
            if packet.is_keyframe:
                self._packets = [packet]
                self.serial += 1
            elif len(self._packets) >= self.limit:
                self._packets = []
                self.overflowed = True
            elif self._packets:
                self._packets.append(packet)

    def packets(self) -> list[Any]:
        """The keyframe and every packet after it, up to now (empty before the first keyframe)."""
        with self._lock:
            return list(self._packets)

    def keyframe(self) -> tuple[int, Any]:
        with self._lock:
            return self.serial, self._packets[0] if self._packets else None

    def clear(self) -> None:
        with self._lock:
            self._packets = []
            self.overflowed = False
