"""Door of the gateway: settings, logging, run."""

from __future__ import annotations

from cinebridge_common.logging import configure_logging
from cinebridge_common.service import run_service

from . import app
from .settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    run_service(lambda: app.run(settings))


if __name__ == "__main__":
    main()
