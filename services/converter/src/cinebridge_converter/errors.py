"""Domain errors of the converter: each says why, and whether retrying can ever help."""

from __future__ import annotations


class ConversionError(Exception):
    """The input can never become a DICOM instance (poison): the reason is shown to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadMedia(ConversionError):
    """The media file is empty, truncated, not an image/video, or beyond our limits."""


class TransientFailure(Exception):
    """Something outside the input failed (disk full, database away): retry later."""


class Cancelled(Exception):
    """The service is stopping; the job will be redelivered."""
