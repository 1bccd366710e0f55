"""Every third-party module a member imports is installed by the member's own dependencies.

An image installs one member and what it declares (`pip install ./libs/common ./services/<svc>`,
services/*/Dockerfile), while the development environment has every member's dependencies at
once: an import that only the development environment satisfies passes every other test and
fails when the container starts (the sender's STOW-RS client once did, with httpx). Here each
member's imports are checked against the closure of its declared requirements, read from the
installed distributions' metadata."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MEMBERS = sorted(p.parent for p in (*ROOT.glob("libs/*/pyproject.toml"),
                                    *ROOT.glob("services/*/pyproject.toml")))  # fmt: skip
#: Test helpers shipped inside a member's package, never imported by the service itself: none
#: since the test support moved to libs/testkit, which declares its own requirements.
TEST_HELPERS: set[str] = set()


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[;( ]", requirement.strip())[0]).lower()


@cache
def _closure(distribution: str) -> frozenset[str]:
    """The distribution and everything it requires at run time (no extras), recursively."""
    seen = {distribution}
    try:
        reqs = requires(distribution) or []
    except PackageNotFoundError:
        return frozenset(seen)
    for req in reqs:
        if "extra ==" in req.replace('"', "").replace("'", ""):
            continue
        seen |= _closure(_name(req))
    return frozenset(seen)


def _imports(source: Path) -> set[str]:
    """Top-level names of the absolute imports of every module under `source` but the test
    helpers."""
    found: set[str] = set()
    for path in source.rglob("*.py"):
        module = ".".join(path.relative_to(source).with_suffix("").parts)
        if any(module == h or module.startswith(h + ".") for h in TEST_HELPERS):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def undeclared(member: Path) -> dict[str, list[str]]:
    """Imported top-level modules no distribution of the member's closure provides, with the
    distributions that do provide them in this environment."""
    project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
    closure: set[str] = set()
    for req in project.get("dependencies", []):
        closure |= _closure(_name(req))
    providers = packages_distributions()
    source = member / "src"
    own = {p.name for p in source.iterdir() if p.is_dir()}
    missing: dict[str, list[str]] = {}
    for top in sorted(_imports(source) - own - set(sys.stdlib_module_names)):
        dists = {_name(d) for d in providers.get(top, [top])}
        if not dists & closure:
            missing[top] = sorted(dists)
    return missing


@pytest.mark.parametrize("member", MEMBERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_member_declares_what_it_imports(member: Path) -> None:
    assert undeclared(member) == {}


def test_an_undeclared_import_is_found(tmp_path: Path) -> None:
    """The check can fail: a member that imports httpx without declaring it."""
    member = tmp_path / "member"
    package = member / "src" / "cinebridge_member"
    package.mkdir(parents=True)
    (member / "pyproject.toml").write_text(
        '[project]\nname = "cinebridge-member"\nversion = "0"\ndependencies = ["pydantic"]\n'
    )
    (package / "__init__.py").write_text(
        "import json\nimport httpx\nfrom pydantic import BaseModel\nfrom . import x\n"
    )
    assert undeclared(member) == {"httpx": ["httpx"]}
