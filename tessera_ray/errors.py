"""One exception hierarchy for the whole package.

Every error a user can cause (bad ROI, bad year, unreachable service, a file
that is not what it claims) is a :class:`TesseraError`; the CLI prints its
message as a single line on stderr and exits non-zero, never a traceback.
"""


class TesseraError(Exception):
    """Base class of everything this package raises on purpose."""

    exit_code = 2


class UserInputError(TesseraError):
    """The input given by the user is malformed or out of range."""


class RoiError(UserInputError):
    """A region of interest could not be read or is empty."""


class ServiceError(TesseraError):
    """A remote service (STAC API, object store, HTTP server) failed for good."""

    exit_code = 3


class DataError(TesseraError):
    """Stored data is missing, corrupt or inconsistent (e.g. a checksum mismatch)."""

    exit_code = 4


class CheckpointError(UserInputError):
    """A file is not a loadable encoder checkpoint."""
