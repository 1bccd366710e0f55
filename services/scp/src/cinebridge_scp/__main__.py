"""Door of the Storage SCP: settings → logging → run."""

from __future__ import annotations

from cinebridge_common.logging import configure_service_logging
from cinebridge_common.service import run_service

from . import app
from .settings import ScpSettings


def main() -> None:
    settings = ScpSettings()
    configure_service_logging("scp", settings)
    run_service(lambda: app.run(settings))


if __name__ == "__main__":
    main()
