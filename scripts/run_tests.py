"""Run the test suite one area at a time, each in its own pytest process, and sum up.

Why separate processes: a service's tests may configure process-wide state (logging, metric
registries, environment) that another service's in-process test peers must not inherit —
exactly as in production, where every service is its own process.
Prints one closing line `N passed, N failed, N skipped` and exits non-zero if any area failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("scp", "worklist", "converter", "sender", "capture", "gateway", "cli")
#: Generated inputs per fuzz target in the test command: five targets, about five minutes.
FUZZ_SECONDS_PER_TARGET = 60


def areas() -> list[tuple[str, list[str]]]:
    found = [
        (
            "common",
            [
                "libs/common",
                "tests/architecture",
                "tests/integration/common",
                "tests/integration/deploy",
            ],
        ),
        ("dicom", ["libs/dicom"]),
    ]
    for svc in SERVICES:
        paths = [p for p in (f"services/{svc}", f"tests/integration/{svc}") if (ROOT / p).exists()]
        found.append((svc, paths))
    found.append(("system", ["tests/integration/system"]))
    # Every fuzz target for its time budget (tests/fuzz, the same run as scripts/fuzz.py).
    found.append(("fuzz", ["tests/fuzz", f"--fuzz-seconds={FUZZ_SECONDS_PER_TARGET}"]))
    return found


def counts(report: Path) -> tuple[int, int, int]:
    if not report.exists():
        return 0, 1, 0  # pytest died before writing its report: count it as a failure
    suite = ET.parse(report).getroot()  # noqa: S314 - our own pytest run wrote it
    suite = suite if suite.tag == "testsuite" else suite[0]
    tests, failures, errors, skipped = (
        int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")
    )
    return tests - failures - errors - skipped, failures + errors, skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="areas to run (default: all)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cinebridge-pytest-"))
    totals = [0, 0, 0]
    failed_areas = []
    for name, paths in areas():
        if args.only and name not in args.only:
            continue
        report = base / f"{name}.xml"
        started = time.monotonic()
        print(f"\n=== {name}: pytest {' '.join(paths)}", flush=True)
        code = subprocess.call(
            [
                sys.executable,
                "-m",
                "pytest",
                f"--basetemp={base / name}",
                f"--junitxml={report}",
                *args.pytest_args,
                *paths,
            ],
            cwd=ROOT,
        )
        passed, failed, skipped = counts(report)
        if code not in (0, 5) and failed == 0:
            failed = 1  # a collection or internal error: never let it pass silently
        totals = [totals[0] + passed, totals[1] + failed, totals[2] + skipped]
        print(
            f"=== {name}: {passed} passed, {failed} failed, {skipped} skipped in "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
        if failed:
            failed_areas.append(name)
    if failed_areas:
        print(f"\nfailed areas: {', '.join(failed_areas)}")
    print(f"\n{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 1 if failed_areas or totals[0] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
