"""Every benchmark offers --json, documented in docs/benchmarks.md; the shared helper prints one
JSON object as the last line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "bench"
#: capture_snapshots.py, gateway_worklist.py and report.py are modules of other benchmarks.
NOT_RUNNABLE_WITH_JSON = {"capture_snapshots.py", "gateway_worklist.py", "report.py"}
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in NOT_RUNNABLE_WITH_JSON)


def test_the_benchmarks_are_found() -> None:
    expected = {"scp.py", "send.py", "convert.py", "worklist.py", "capture.py", "gateway.py"}
    assert expected <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_offers_json_and_is_documented(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--json" in done.stdout
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    assert f"## `bench/{script}`" in docs


def test_figures_print_one_json_object_last() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from report import Figures;"
        "f = Figures('demo'); print('text report');"
        "f.put('small', 'cinebridge', 'seconds', 1.23456789);"
        "f.put('small', 'ratio', 2); f.put('spread', {'p50': 1.0000001});"
        "f.emit(True)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(BENCH)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "text report" and len(lines) == 2
    figures = json.loads(lines[-1])
    assert figures["bench"] == "demo" and figures["small"]["ratio"] == 2
    assert figures["small"]["cinebridge"]["seconds"] == 1.234568
    assert figures["spread"] == {"p50": 1.0}
    assert len(figures["load_before"]) == 3 and len(figures["load_after"]) == 3
