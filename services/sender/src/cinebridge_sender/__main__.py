"""Door of the sender: `python -m cinebridge_sender` or `cinebridge-sender`."""

from __future__ import annotations

from cinebridge_common.logging import configure_service_logging
from cinebridge_common.service import run_service

from . import app
from .settings import SenderSettings


def main() -> None:
    settings = SenderSettings()
    configure_service_logging("sender", settings)
    run_service(lambda: app.run(settings))


if __name__ == "__main__":
    main()
