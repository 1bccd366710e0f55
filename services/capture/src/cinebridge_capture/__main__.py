"""Door of the capture service: settings → logging → run the room."""

from __future__ import annotations

from cinebridge_common.logging import configure_service_logging
from cinebridge_common.service import run_service

from . import app
from .settings import CaptureSettings


def main() -> None:
    settings = CaptureSettings()
    configure_service_logging("capture", settings, room=settings.capture_room)
    run_service(lambda: app.run(settings))


if __name__ == "__main__":
    main()
