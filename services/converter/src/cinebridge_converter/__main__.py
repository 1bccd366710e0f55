"""Door of the converter: `python -m cinebridge_converter` or `cinebridge-converter`."""

from __future__ import annotations

from cinebridge_common.logging import configure_service_logging
from cinebridge_common.service import run_service

from . import app
from .settings import ConverterSettings


def main() -> None:
    settings = ConverterSettings()
    configure_service_logging("converter", settings)
    run_service(lambda: app.run(settings))


if __name__ == "__main__":
    main()
