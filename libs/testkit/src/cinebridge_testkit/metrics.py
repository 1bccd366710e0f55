"""Scrape a service's /metrics in tests and compare two scrapes."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition: (name, labels) → value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


async def scrape(base_url: str) -> Samples:
    """GET `<base_url>/metrics` (a service's health server) and parse it."""

    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {base_url!r}")

    def get() -> str:
        url = base_url.rstrip("/") + "/metrics"
        with urllib.request.urlopen(url, timeout=10) as rsp:  # noqa: S310 (checked above)
            return str(rsp.read().decode())

    return parse(await asyncio.to_thread(get))


def value(samples: Samples, name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples named `name` whose labels include `labels` (0 when none)."""
    want = set((labels or {}).items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much `name` (restricted to `labels`) grew between two scrapes."""
    return value(after, name, labels) - value(before, name, labels)
