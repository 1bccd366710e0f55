"""Worklist queries counted by server and outcome; the cache age of a cached answer."""

from __future__ import annotations

import datetime as dt

from cinebridge_common.messages import WorklistQueryReply
from cinebridge_worklist import metrics
from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_live_cached_and_failed_answers() -> None:
    queries = "cinebridge_worklist_queries_total"
    before = sample(queries, server="ris-m", outcome="complete")
    metrics.observe_query(WorklistQueryReply(server_id="ris-m", outcome="complete"), 0.2)
    assert sample(queries, server="ris-m", outcome="complete") == before + 1
    assert sample("cinebridge_worklist_cache_age_seconds", server="ris-m") == 0

    fetched = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    cached = WorklistQueryReply(
        server_id="ris-m", outcome="unreachable", cached=True, cached_at=fetched
    )
    metrics.observe_query(cached, 0.1)
    assert sample(queries, server="ris-m", outcome="cached") >= 1
    age = sample("cinebridge_worklist_cache_age_seconds", server="ris-m")
    assert 7100 < age < 7300

    failed = WorklistQueryReply(ok=False, error="no enabled worklist server")
    metrics.observe_query(failed, 0.0)
    assert sample(queries, server="all", outcome="failed") >= 1
    assert sample("cinebridge_worklist_query_duration_seconds_count", server="ris-m") >= 2
