"""Regenerate requirements.txt: exact pins for every third-party dependency of the workspace.

Collects the dependencies of every member (and the root dev group), drops the workspace's own
packages, and lets `uv pip compile` resolve them into name==version lines (no index URLs, so the
file is safe to commit).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def collect() -> list[str]:
    reqs: set[str] = set()
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs.update(root["dependency-groups"]["dev"])
    for member in sorted(
        [*ROOT.glob("libs/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")]
    ):
        project = tomllib.loads(member.read_text())["project"]
        reqs.update(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            reqs.update(extra)
    return sorted(r for r in reqs if not r.startswith("cinebridge"))


def main() -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".in", delete=False) as fh:
        fh.write("\n".join(collect()) + "\n")
    cmd = [
        "uv",
        "pip",
        "compile",
        fh.name,
        "--python-version",
        "3.11",
        "--no-header",
        "--no-annotate",
        "-o",
        str(ROOT / "requirements.txt"),
    ]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
