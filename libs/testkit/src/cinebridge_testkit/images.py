"""A service run as its production image installs it: its own member and the members it
depends on, nothing else, so its start applies only the common migrations and its own
(docs/architecture.md, "Migrations") and it cannot import another service.

The development environment installs every member; `image_site` is a site directory with all of
this interpreter's site-packages except the other members' distributions and import paths, and
`image_command` runs a module with that directory as its only site.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

_MEMBER = re.compile(r"^(?:_editable_impl_)?(cinebridge_[a-z]+)(?:[-.]|$)")


def image_members(distribution: str) -> set[str]:
    """`distribution` and every `cinebridge-*` distribution it requires, transitively, as
    import names (`cinebridge_gateway`, `cinebridge_common`, ...)."""
    found: set[str] = set()
    todo = [distribution]
    while todo:
        name = todo.pop()
        module = name.replace("-", "_")
        if module in found:
            continue
        found.add(module)
        for requirement in metadata.requires(name) or []:
            required = re.split(r"[\s;<>=!~\[]", requirement, maxsplit=1)[0]
            if required.startswith("cinebridge-"):
                todo.append(required)
    return found


def image_site(directory: Path, distribution: str) -> Path:
    """A site directory (made in `directory`) holding what the image of `distribution` holds."""
    keep = image_members(distribution)
    site = directory / f"site-{distribution}"
    site.mkdir(parents=True)
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        member = _MEMBER.match(entry.name)
        if member is None or member.group(1) in keep:
            (site / entry.name).symlink_to(entry)
    return site


def image_command(site: Path, module: str) -> list[str]:
    """`python -m <module>` with `site` as the only site directory."""
    code = (
        f"import runpy, site; site.addsitedir({str(site)!r}); "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-S", "-c", code]
