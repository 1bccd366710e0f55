"""Door of the gateway: settings, logging, run."""

from __future__ import annotations

import uvloop
from cinebridge_common.logging import configure_service_logging
from cinebridge_common.service import run_service

from . import app
from .settings import GatewaySettings


def main() -> None:
    # libuv's loop: the gateway's HTTP hot path is event-loop bound (bench/gateway.py).
    uvloop.install()
    settings = GatewaySettings()
    configure_service_logging("gateway", settings)
    run_service(lambda: app.run(settings, on_started=app.freeze_start_up_objects))


if __name__ == "__main__":
    main()
