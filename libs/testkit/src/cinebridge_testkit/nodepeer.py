"""Outside peers written for Node.js (dcmjs-dimse), installed by the tests themselves.

The peer's package.json (tests/peers/<name>/, one exact version, no lockfile in git) is
installed with `npm install --no-package-lock` into a cache folder named after its content, so
a second run reuses it and a changed pin installs afresh. Node and npm come from Debian
(.ci/packages.txt); a missing one fails under CI like every missing peer (`require_tool`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import require_tool


@dataclass(frozen=True)
class NodePeer:
    node: str
    scripts: Path
    node_path: Path

    def command(self, script: str, *args: str) -> list[str]:
        return [self.node, str(self.scripts / script), *args]

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_PATH": str(self.node_path)}


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cinebridge" / "npm"


def node_peer(scripts: Path, timeout_s: float = 600.0) -> NodePeer:
    """The peer in `scripts` (its package.json installed once per content) ready to run."""
    node, npm = require_tool("node"), require_tool("npm")
    manifest = (scripts / "package.json").read_bytes()
    target = _cache_root() / f"{scripts.name}-{hashlib.sha256(manifest).hexdigest()[:12]}"
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes may install at once
        done = target / ".installed"
        if not done.exists():
            (target / "package.json").write_bytes(manifest)
            subprocess.run(
                [npm, "install", "--no-package-lock", "--no-audit", "--no-fund", "--quiet"],
                cwd=target,
                check=True,
                timeout=timeout_s,
                capture_output=True,
            )
            done.touch()
    return NodePeer(node, scripts, target / "node_modules")
