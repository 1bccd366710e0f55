"""A one-line progress bar on stderr for long work (sending, backup, restore); silent when
stderr is not a terminal, so scripts and logs get only the summary."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


def size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class Progress:
    """`advance(n)` as bytes are done; `note(text)` says what is being done; `close()` ends
    the line. Redraws at most ten times a second."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self.text = ""
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._drawn_at = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        self._draw()

    def note(self, text: str) -> None:
        self.text = text
        self._draw(force=True)

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < 0.1 and self.done < self.total:
            return
        self._drawn_at = now
        share = min(self.done / self.total, 1.0) if self.total else 1.0
        bar = "#" * int(share * WIDTH)
        line = (
            f"\r{self.label} [{bar:<{WIDTH}}] {share * 100:5.1f} % "
            f"{size_text(self.done)} / {size_text(self.total)} {self.text}"
        )
        self.stream.write(line[:200].ljust(100))
        self.stream.flush()

    def say(self, text: str) -> None:
        """One line about a step whose progress cannot be measured (a dump, a restore)."""
        if self.enabled:
            self.stream.write(f"{self.label}: {text}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
