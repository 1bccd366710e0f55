"""What a C-STORE status or a network failure means for a delivery (statement Table 11), and when
to try again (exponential backoff with jitter up to a cap)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["sent", "warning", "failed-retrying", "failed-permanent"]

SUCCESS = 0x0000
#: Table 11 warnings: the SCP stored the instance (B000 coercion, B006 elements discarded,
#: B007 data set does not match SOP class); "send the next instance".
TABLE_11_WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
#: 0110 processing failure (PS3.7 C.4.2) is what a well-behaved SCP answers when its disk or
#: database hiccups (our own SCP does, DESIGN "Rules"); 0213 resource limitation (PS3.7 C.5.10).
TRANSIENT_CODES = frozenset({0x0110, 0x0213})


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str


def classify_status(status: int) -> Verdict:
    """Table 11: 0000 success; B000/B006/B007 success with a warning; anything else failed.

    Whether a failure is worth retrying is ours to decide (the statement leaves it to the
    operator): A7xx "out of resources" (PS3.4 B.2.3) and Cxxx "cannot understand" (often an SCP
    that failed to parse a truncated transfer) are retried; 0122 SOP class not supported, 0124
    not authorised, A9xx data set does not match SOP class and every unknown code are permanent,
    because sending the same bytes again gives the same answer.
    """
    code = f"{status:04X}"
    if status == SUCCESS:
        return Verdict("sent", "0000 success")
    if status in TABLE_11_WARNINGS:
        return Verdict("warning", f"{code} warning: {_WARNING_TEXT[status]}")
    if 0xA700 <= status <= 0xA7FF:
        return Verdict("failed-retrying", f"{code} refused: out of resources")
    if 0xC000 <= status <= 0xCFFF:
        return Verdict("failed-retrying", f"{code} error: cannot understand")
    if status in TRANSIENT_CODES:
        return Verdict("failed-retrying", f"{code} {_FAILURE_TEXT[status]}")
    text = _FAILURE_TEXT.get(status)
    if text is None and 0xA900 <= status <= 0xA9FF:
        text = "error: data set does not match SOP class"
    return Verdict("failed-permanent", f"{code} {text or 'unrecognised failure status'}")


_WARNING_TEXT = {
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
}
_FAILURE_TEXT = {
    0x0110: "processing failure",
    0x0117: "invalid SOP instance",
    0x0122: "refused: SOP class not supported",
    0x0124: "refused: not authorised",
    0x0210: "duplicate invocation",
    0x0211: "unrecognised operation",
    0x0212: "mistyped argument",
    0x0213: "resource limitation",
}


@dataclass(frozen=True)
class Backoff:
    """Delay before attempt n+1 after n failures: base * factor**(n-1), capped, +-jitter."""

    base_s: float = 30.0
    factor: float = 2.0
    cap_s: float = 600.0
    jitter: float = 0.2

    def delay_s(self, failures: int, rng: random.Random | None = None) -> float:
        n = max(failures, 1)
        raw = min(self.base_s * self.factor ** min(n - 1, 64), self.cap_s)
        spread = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        # Jitter spreads the retries of many senders out: no thundering herd on a PACS that is back.
        return float(raw * spread)
