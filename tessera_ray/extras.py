"""Optional parts of the package and the packages they need.

A cluster node runs ``pip install tessera-ray``: reading scenes, encoding and
writing the store. What only the demo, the heads or our own HTTP servers use
is an extra (``pyproject.toml``); a command that needs a missing one ends with
one line naming the ``pip install`` that fixes it.
"""

from __future__ import annotations

import importlib.util

from tessera_ray.errors import UserInputError

EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("starlette", "uvicorn"),  # tessera-ray serve and the stand-in STAC API
    "heads": ("sklearn", "skops", "matplotlib"),  # probe, classify, regress, saved heads, curves
    "demo": ("moto", "starlette", "uvicorn", "sklearn", "skops", "matplotlib"),  # the synthetic world's services
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, what: str) -> None:
    """Raise one clear line if ``extra``'s packages are not installed (``what`` needs them)."""
    absent = missing(extra)
    if absent:
        raise UserInputError(f"{what} needs the optional packages of tessera-ray[{extra}] "
                             f"({', '.join(absent)} not installed): pip install 'tessera-ray[{extra}]'")
