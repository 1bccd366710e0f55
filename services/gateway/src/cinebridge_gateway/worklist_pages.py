"""The last worklist answers of each user, kept briefly so the table pages without asking the
worklist server again (a C-FIND per page would be slower and could answer differently).

An answer is kept as one JSON text per entry (~4 KB each; parsed, 1,000 entries take ~38 MB
of Python objects, as text 3.7 MB), and a page is made of its entries' texts unparsed.
Bounded: at most `MAX_RESULTS` answers and `MAX_BYTES` of entries in all, each for `TTL_S`;
the oldest go first (the newest answer always stays: its size was bounded by the worklist's
entry cap). An answer is paged only by the user who asked for it. Another gateway instance
(or a restart) does not have it: the page request answers 404 and the UI searches again.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import pydantic_core
from cinebridge_common.messages import WorklistItem, WorklistQueryReply
from cinebridge_common.messages.worklist import split_reply

MAX_RESULTS = 32
MAX_BYTES = 96 << 20
TTL_S = 15 * 60.0


@dataclass(frozen=True)
class StoredAnswer:
    """A worklist answer without its entries (`meta`) and each entry as JSON text."""

    meta: WorklistQueryReply
    items: list[bytes]
    size: int

    @classmethod
    def of(cls, reply: WorklistQueryReply) -> StoredAnswer:
        """CPU-bound for a large answer: callers run it in a worker thread."""
        items = [item.json_text().encode() for item in reply.items]
        return cls(reply.model_copy(update={"items": []}), items, sum(map(len, items)))

    @classmethod
    def from_reply_bytes(cls, data: bytes) -> StoredAnswer:
        """The worklist service's reply as it crossed the bus: the banner (outcome, warnings,
        flags of the answer) is validated; an answer with its entries one per line (what the
        worklist service sends for a live answer, `encode_reply`) is not parsed at all but for
        its banner, and its entries' texts are what the pages pass on (validating 1,000
        entries of ~4 KB cost the gateway three times more than parsing them as plain JSON,
        `bench/gateway.py`). Any other layout is parsed and each entry put in the
        `WorklistItem` shape. CPU-bound: callers run it in a worker thread."""
        split = split_reply(data)
        if split is not None:
            banner, texts = split
            meta = WorklistQueryReply.model_validate_json(banner)
            return cls(meta, texts, sum(map(len, texts)))
        raw = pydantic_core.from_json(data)
        entries = raw.pop("items", None) or []
        # Another layout (an older service): each entry in the `WorklistItem` shape now, so
        # pages pass the texts through as they are.
        items = [WorklistItem.model_validate(e).model_dump_json().encode() for e in entries]
        meta = WorklistQueryReply.model_validate(raw)
        return cls(meta, items, sum(map(len, items)))

    @property
    def total(self) -> int:
        return len(self.items)

    def page(self, offset: int, limit: int) -> list[WorklistItem]:
        return [
            WorklistItem.model_validate_json(raw) for raw in self.items[offset : offset + limit]
        ]

    def entries_json(self, offset: int, limit: int) -> bytes:
        """A page's entries as one JSON array, made of their texts without parsing them: each
        text is a `WorklistItem` as the worklist service dumped it (the model both services
        share), or as `from_reply_bytes` made it."""
        return b"[" + b",".join(self.items[offset : offset + limit]) + b"]"


@dataclass(frozen=True)
class _Kept:
    owner: str
    stored_at: float
    answer: StoredAnswer


class WorklistPages:
    def __init__(self) -> None:
        self._results: OrderedDict[str, _Kept] = OrderedDict()

    def keep(self, owner: str, answer: StoredAnswer) -> str:
        result_id = uuid.uuid4().hex
        self._results[result_id] = _Kept(owner, time.monotonic(), answer)
        self._trim()
        return result_id

    def get(self, owner: str, result_id: str) -> StoredAnswer | None:
        self._trim()
        kept = self._results.get(result_id)
        if kept is None or kept.owner != owner:
            return None
        return kept.answer

    def _trim(self) -> None:
        now = time.monotonic()
        size = sum(k.answer.size for k in self._results.values())
        while self._results:
            oldest = next(iter(self._results.values()))
            expired = now - oldest.stored_at > TTL_S
            over = len(self._results) > MAX_RESULTS or size > MAX_BYTES
            if not expired and not (over and len(self._results) > 1):
                break
            _, dropped = self._results.popitem(last=False)
            size -= dropped.answer.size
