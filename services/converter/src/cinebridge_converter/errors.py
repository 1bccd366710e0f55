"""Domain errors of the converter: each says why, and whether retrying can ever help."""

from __future__ import annotations

import errno


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


#: errno values that mean "out of a resource", worth retrying later; any other error is final.
RESOURCE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,  # a file size limit of the media store
        errno.EIO,
        errno.EROFS,
        errno.ENOMEM,
        errno.EMFILE,
        errno.ENFILE,
        errno.EAGAIN,
        errno.EINTR,
        errno.EBUSY,
        errno.ESTALE,
    }
)
