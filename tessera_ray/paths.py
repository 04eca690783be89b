"""Where users point us, checked before any work starts.

URLs are checked by their shape, output paths by the folder that holds them.

Every command that writes calls :func:`output_file` or :func:`output_folder`
on its output options before it reads or computes anything, so a path that
cannot be written ends in one line (exit 2) and nothing half-written:

* the folder that will hold the output must exist (it is not created:
  a mistyped parent is a mistake to report, not a tree to make);
* a file output must not be an existing folder, a folder output not an
  existing file;
* that folder must be writable (permissions, read-only file systems).

:func:`check_url` refuses an ``http(s)://`` or ``s3://`` URL that cannot name
anything (no host, a bad port, no bucket, unparseable) as a user mistake,
before a request is made (a network error would say "cannot reach", exit 3).
:func:`removed_if_failed` takes back an output folder a failed command made
and left empty.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from tessera_ray.errors import UserInputError

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_NETWORK = ("http", "https", "s3")


def _network_scheme(text: str) -> str:
    """``http``, ``https`` or ``s3`` when ``text`` starts with one of them and a colon (even if the
    slashes after it are wrong), else ``""``."""
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    return scheme if scheme in _NETWORK else ""


def is_url(text: str | os.PathLike) -> bool:
    """Whether ``text`` is a URL (``scheme://...``, or ``http:``/``https:``/``s3:`` however malformed)
    rather than a local path (``C:\\x`` is a path)."""
    text = str(text)
    if _network_scheme(text):
        return True
    scheme = text.split("://", 1)[0] if "://" in text else ""
    return len(scheme) > 1 and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) is not None


def check_url(url: str, what: str = "URL") -> str:
    """``url`` itself when an ``http(s)://`` or ``s3://`` URL is well formed; else a one-line error.

    Other schemes and local paths are returned untouched (their readers judge them).
    """
    text = str(url)
    scheme = _network_scheme(text)
    if not scheme:
        return text
    if not text[len(scheme):].startswith("://"):
        raise UserInputError(f"malformed {what} {text!r}: {scheme}: must be followed by // (use {scheme}://...)")
    try:
        parts = urlsplit(text)
        port = parts.port  # a port that is not a number in 0..65535 raises here
    except ValueError as exc:
        raise UserInputError(f"malformed {what} {text!r}: {exc}") from None
    if scheme == "s3":
        if not parts.netloc:
            raise UserInputError(f"malformed {what} {text!r}: no bucket (use s3://bucket/prefix)")
        if not _BUCKET.fullmatch(parts.netloc):
            raise UserInputError(f"malformed {what} {text!r}: {parts.netloc!r} is not an S3 bucket name")
        return text
    if not parts.hostname:
        raise UserInputError(f"malformed {what} {text!r}: no host (use {scheme}://host/path)")
    if port == 0:
        raise UserInputError(f"malformed {what} {text!r}: port 0")
    if any(c.isspace() for c in parts.netloc):
        raise UserInputError(f"malformed {what} {text!r}: white space in the host")
    return text


def _holder(path: Path) -> Path:
    """The folder that holds ``path`` (``.`` for a bare name)."""
    return path.parent if str(path.parent) else Path(".")


def _why_not_writable(folder: Path) -> str | None:
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except (OSError, AttributeError):  # pragma: no cover - statvfs is POSIX only
        pass
    return "permission denied"


def _check_holder(path: Path, option: str) -> None:
    holder = _holder(path)
    if not holder.exists():
        raise UserInputError(f"{option} {path}: no such folder {holder} (create it first)")
    if not holder.is_dir():
        raise UserInputError(f"{option} {path}: {holder} is not a folder")
    why = _why_not_writable(holder)
    if why:
        raise UserInputError(f"{option} {path}: cannot write in {holder}: {why}")


def output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as a :class:`Path` when a file can be written there; else a one-line error."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a folder; give a file name")
    _check_holder(path, option)
    return path


def output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as a :class:`Path` when it is (or can be made as) a writable folder; else a one-line error.

    The folder itself is not created here (see :func:`removed_if_failed`).
    """
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserInputError(f"{option} {path} exists and is not a folder")
        why = _why_not_writable(path)
        if why:
            raise UserInputError(f"{option} {path}: cannot write in it: {why}")
        return path
    _check_holder(path, option)
    return path


@contextlib.contextmanager
def removed_if_failed(folder: str | os.PathLike) -> Iterator[Path]:
    """Run a block that writes into ``folder``; if it fails, remove the folder again when the
    block created it and left it empty (an output folder is either used or not there)."""
    folder = Path(folder)
    existed = folder.exists()
    try:
        yield folder
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds on an empty folder
        raise
