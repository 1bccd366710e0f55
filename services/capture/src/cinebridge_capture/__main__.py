"""Door of the capture service: settings → logging → run the room."""

from __future__ import annotations

from cinebridge_common.logging import configure_logging
from cinebridge_common.service import run_service

from . import app
from .settings import CaptureSettings


def main() -> None:
    settings = CaptureSettings()
    configure_logging("capture", settings.log_level)
    run_service(lambda: app.run(settings))


if __name__ == "__main__":
    main()
