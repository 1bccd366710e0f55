"""Run the test suite — every area in one pytest process — and sum up per area.

One process (the default, `--one-process`): collection, the session's NATS and PostgreSQL and
the template database are paid once, and nothing a test leaves process-wide may leak into
another area (tests put back what they change; services configure logging in `__main__` only).
`--separate` runs each area in its own process, one after another: a check that an area stands
alone, and what `make area` does for one area.
Prints one line per area, then `N passed, N failed, N skipped`; exits non-zero if anything
failed, including a collection error (the other areas still run).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("scp", "worklist", "converter", "sender", "capture", "gateway", "cli")
#: Generated inputs per fuzz target in the test command: five targets, about five minutes.
FUZZ_SECONDS_PER_TARGET = 60
#: Whether `make test` runs one pytest process per area (`--separate`), or all areas in one.
SEPARATE_BY_DEFAULT = False
#: Where a test whose area cannot be told from its module is counted (a collection error).
UNKNOWN = "collection"


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


def area_of(classname: str, prefixes: list[tuple[str, str]]) -> str:
    """The area of a test from its junit classname (`services.scp.tests.test_x[.Class]`)."""
    for prefix, name in prefixes:
        if classname == prefix or classname.startswith(prefix + "."):
            return name
    return UNKNOWN


def counts_by_area(
    report: Path, chosen: list[tuple[str, list[str]]]
) -> dict[str, tuple[Counter[str], float]]:
    """Area -> (outcome counts: passed/failed/skipped, seconds) from a junit report."""
    prefixes = sorted(
        ((p.replace("/", "."), name) for name, paths in chosen for p in paths if p[0] != "-"),
        key=lambda item: -len(item[0]),
    )
    result: dict[str, tuple[Counter[str], float]] = {name: (Counter(), 0.0) for name, _ in chosen}
    if not report.exists():
        result[UNKNOWN] = (Counter(failed=1), 0.0)  # pytest died before writing its report
        return result
    root = ET.parse(report).getroot()  # noqa: S314 - our own pytest run wrote it
    for case in root.iter("testcase"):
        name = area_of(case.get("classname", ""), prefixes)
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
                break
            if child.tag == "skipped":
                outcome = "skipped"
        tally, seconds = result.setdefault(name, (Counter(), 0.0))
        tally[outcome] += 1
        result[name] = (tally, seconds + float(case.get("time", 0) or 0))
    return result


def pytest_command(base: Path, name: str, args: list[str], paths: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        f"--basetemp={base / name}",
        f"--junitxml={base / (name + '.xml')}",
        *args,
        *paths,
    ]


def run_one_process(
    base: Path, chosen: list[tuple[str, list[str]]], extra: list[str]
) -> tuple[list[str], list[int]]:
    paths = [p for _, ps in chosen for p in ps]
    command = pytest_command(base, "all", ["--continue-on-collection-errors", *extra], paths)
    print(f"\n=== one process: pytest {' '.join(paths)}", flush=True)
    code = subprocess.call(command, cwd=ROOT)
    lines, totals, failed_areas = [], [0, 0, 0], []
    for name, (tally, seconds) in counts_by_area(base / "all.xml", chosen).items():
        if name == UNKNOWN and not tally:
            continue
        passed, failed, skipped = tally["passed"], tally["failed"], tally["skipped"]
        lines.append(
            f"=== {name}: {passed} passed, {failed} failed, {skipped} skipped in {seconds:.0f} s"
        )
        totals = [totals[0] + passed, totals[1] + failed, totals[2] + skipped]
        if failed:
            failed_areas.append(name)
    if code not in (0, 1) or (code == 1 and totals[1] == 0):
        # an internal or usage error, an interrupted run, or a failure outside any test case
        totals[1] += 1
        failed_areas.append(f"pytest exit status {code}")
    print("\n" + "\n".join(lines), flush=True)
    return failed_areas, totals


def run_separately(
    base: Path, chosen: list[tuple[str, list[str]]], extra: list[str]
) -> tuple[list[str], list[int]]:
    totals, failed_areas = [0, 0, 0], []
    for name, paths in chosen:
        started = time.monotonic()
        print(f"\n=== {name}: pytest {' '.join(paths)}", flush=True)
        code = subprocess.call(pytest_command(base, name, extra, paths), cwd=ROOT)
        tally, _ = counts_by_area(base / f"{name}.xml", [(name, paths)]).get(name, (Counter(), 0.0))
        passed, failed, skipped = tally["passed"], tally["failed"], tally["skipped"]
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
    return failed_areas, totals


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", nargs="*", help="areas to run (default: all)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--one-process",
        dest="separate",
        action="store_false",
        help="every area in one pytest process",
    )
    mode.add_argument(
        "--separate",
        dest="separate",
        action="store_true",
        help="one pytest process per area, one after another",
    )
    parser.set_defaults(separate=SEPARATE_BY_DEFAULT)
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    chosen = [(n, p) for n, p in areas() if not args.only or n in args.only]
    base = Path(tempfile.mkdtemp(prefix="cinebridge-pytest-"))
    started = time.monotonic()
    run = run_separately if args.separate else run_one_process
    failed_areas, totals = run(base, chosen, args.pytest_args)
    if failed_areas:
        print(f"\nfailed areas: {', '.join(failed_areas)} (temp folders kept in {base})")
    else:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nin {time.monotonic() - started:.0f} s")
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 1 if failed_areas or totals[0] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
