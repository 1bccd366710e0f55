"""`--json` for the benchmarks: the figures a run prints as text, as one JSON object.

Each benchmark records every figure and ratio it prints into a `Figures` (nested names, stable
across runs: docs/benchmarks.md lists them) and, with `--json`, prints the object as the last
line of its output, so a script can keep the last line and compare runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print every figure as one JSON object on the last line (docs/benchmarks.md)",
    )


class Figures:
    """Nested figures of one run: `figures.put("small", "cinebridge", "instances_per_s", 812.4)`."""

    def __init__(self, bench: str) -> None:
        self.data: dict[str, Any] = {
            "bench": bench,
            "cpus": os.cpu_count(),
            "load_before": list(os.getloadavg()),
        }

    def put(self, *path_and_value: Any) -> None:
        *path, value = path_and_value
        node = self.data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = _rounded(value)

    def emit(self, enabled: bool) -> None:
        """Print the object as the last line (when `--json`)."""
        self.data["load_after"] = list(os.getloadavg())
        if enabled:
            sys.stdout.flush()
            print(json.dumps(self.data, sort_keys=True), flush=True)
