"""Door of the Storage SCP: settings → logging → run."""

from __future__ import annotations

import uvloop
from cinebridge_common.logging import configure_service_logging
from cinebridge_common.service import run_service

from . import app
from .settings import ScpSettings


def main() -> None:
    # libuv's loop: every C-STORE's index row passes through the event loop (group_index.py),
    # a few wake-ups and round trips each (docs/benchmarks.md, "CPU per instance").
    uvloop.install()
    settings = ScpSettings()
    configure_service_logging("scp", settings)
    run_service(lambda: app.run(settings))


if __name__ == "__main__":
    main()
