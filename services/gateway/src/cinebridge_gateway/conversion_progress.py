"""The conversions in progress as the converter last reported them, for a page that is loaded or
refreshed mid-conversion.

The converter's reports (`cb.evt.conversion.progressed`) are live events only — a core publish,
at most twice a second, never stored — so a page that was not listening when one went by would
show the progress again only at the next report. The gateway sees every event (it relays them to
the browsers), keeps the latest report of each media item until the item's outcome arrives
(`cb.evt.instance.created` or `cb.evt.conversion.failed`), and the study detail carries it.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cinebridge_common.messages import ConversionFailed, ConversionProgressed, InstanceCreated

#: Items kept at the most (a station converts a few at a time); the oldest report goes first.
LIMIT = 1000

#: The media states in which a conversion can be under way: an outcome already recorded by the
#: study catalog (converted, failed, deleted) outranks any report this process kept.
_CONVERTING = frozenset({"captured", "converting"})
_OUTCOMES = frozenset({InstanceCreated.subject, ConversionFailed.subject})


@dataclass(frozen=True)
class Report:
    stage: str  # transcode, remux, write
    fraction: float


class ConversionProgress:
    """The latest report per media item, fed by the gateway's event subscription."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._reports: OrderedDict[str, Report] = OrderedDict()

    def __len__(self) -> int:
        return len(self._reports)

    def observe(self, subject: str, data: bytes) -> None:
        """One event as the bus carried it; only progress reports and outcomes matter here."""
        if subject == ConversionProgressed.subject:
            try:
                msg = ConversionProgressed.from_bytes(data)
            except ValueError:
                return
            self._reports[msg.media_id] = Report(msg.stage, msg.fraction)
            self._reports.move_to_end(msg.media_id)
            while len(self._reports) > self.limit:
                self._reports.popitem(last=False)
        elif subject in _OUTCOMES and self._reports:
            try:
                media_id = json.loads(data).get("media_id")
            except (ValueError, AttributeError):
                return
            self._reports.pop(str(media_id), None)

    def annotate(self, media: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each item still being converted with its latest report as `progress`."""
        for item in media:
            report = self._reports.get(str(item["id"]))
            if report is not None and item.get("state") in _CONVERTING:
                item["progress"] = {"stage": report.stage, "fraction": report.fraction}
        return media
