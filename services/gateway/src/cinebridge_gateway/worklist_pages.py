"""The last worklist answers of each user, kept briefly so the table pages without asking the
worklist server again (a C-FIND per page would be slower and could answer differently).

Bounded: at most `MAX_RESULTS` answers and `MAX_ITEMS` entries in all, each for `TTL_S`;
the oldest go first. An answer is paged only by the user who asked for it. Another gateway
instance (or a restart) does not have it: the page request answers 404 and the UI searches
again.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from cinebridge_common.messages import WorklistQueryReply

MAX_RESULTS = 32
MAX_ITEMS = 50_000
TTL_S = 15 * 60.0


@dataclass(frozen=True)
class _Kept:
    owner: str
    stored_at: float
    reply: WorklistQueryReply


class WorklistPages:
    def __init__(self) -> None:
        self._results: OrderedDict[str, _Kept] = OrderedDict()

    def keep(self, owner: str, reply: WorklistQueryReply) -> str:
        result_id = uuid.uuid4().hex
        self._results[result_id] = _Kept(owner, time.monotonic(), reply)
        self._trim()
        return result_id

    def get(self, owner: str, result_id: str) -> WorklistQueryReply | None:
        self._trim()
        kept = self._results.get(result_id)
        if kept is None or kept.owner != owner:
            return None
        return kept.reply

    def _trim(self) -> None:
        now = time.monotonic()
        total = sum(len(k.reply.items) for k in self._results.values())
        while self._results:
            oldest = next(iter(self._results.values()))
            expired = now - oldest.stored_at > TTL_S
            if not (expired or len(self._results) > MAX_RESULTS or total > MAX_ITEMS):
                break
            if len(self._results) == 1 and not expired:
                break  # the newest answer stays, however large (its query was bounded)
            _, dropped = self._results.popitem(last=False)
            total -= len(dropped.reply.items)
