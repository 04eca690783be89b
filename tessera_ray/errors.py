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


class ClusterError(ServiceError):
    """The Ray cluster cannot run the job (no resources for the encoders, actors that do not start)."""


DEBUG_ENV = "TESSERA_RAY_DEBUG"


def env_number(name: str, default: float, cast: type = float, minimum: float = 0, environ=None) -> float:
    """The number in environment variable ``name`` (``default`` when unset): a setting's mistake is one line too.

    ``environ``: a mapping to read instead of the process environment (a captured one).
    """
    import os

    text = str((os.environ if environ is None else environ).get(name, "")).strip()
    if not text:
        return cast(default)
    try:
        value = cast(text)
    except ValueError:
        raise UserInputError(f"{name}={text!r} is not a{'n integer' if cast is int else ' number'}") from None
    if not value >= minimum:  # NaN too
        raise UserInputError(f"{name} must be at least {minimum:g}, got {text}")
    return value


def debug_enabled() -> bool:
    """``--debug`` or ``TESSERA_RAY_DEBUG=1``: show the full chain behind a one-line error."""
    import os

    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def root_cause(exc: BaseException) -> BaseException:
    """The error behind ``exc``: through Ray's wrappers (``.cause``, possibly twice) and ``raise ... from``.

    A :class:`TesseraError` met on the way wins (its message is written for the
    user); otherwise the innermost error.
    """
    cause, seen = exc, set()
    while id(cause) not in seen:
        seen.add(id(cause))
        inner = getattr(cause, "cause", None)
        if isinstance(inner, BaseException) and inner is not cause:
            cause = inner
            continue
        if isinstance(cause, TesseraError):
            return cause
        if cause.__cause__ is not None:
            cause = cause.__cause__
            continue
        break
    return cause


def squash(text: object, limit: int = 300) -> str:
    """``text`` on one line (runs of whitespace collapsed), cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def one_line(exc: BaseException, limit: int = 300, named: bool = False) -> str:
    """``exc``'s root cause as one line: its message for our own errors, ``Type: message`` for others.

    ``named`` prefixes our own errors with their type too (a run's per-unit
    failure lines, where the kind of failure is what an operator sorts by).
    """
    cause = root_cause(exc)
    text = str(cause)
    if "Traceback" in text:  # Ray puts the remote traceback in the message
        text = text.split("Traceback")[0]
    if isinstance(cause, TesseraError) and not named:
        return squash(text, limit) or type(cause).__name__
    return squash(f"{type(cause).__name__}: {text}".rstrip(": "), limit)
