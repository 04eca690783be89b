"""One-line error text and root causes, as the CLI and the pipelines use them."""

from __future__ import annotations

import pytest

from tessera_ray.errors import DataError, one_line, root_cause, squash


class FakeRayTaskError(Exception):
    """Ray's wrapper shape: the remote error on ``.cause``, its traceback in the message."""

    def __init__(self, cause: BaseException):
        super().__init__(f"ray::write_unit() (pid=1)\nTraceback (most recent call last):\n  ...\n{cause!r}")
        self.cause = cause


def test_root_cause_goes_through_ray_wrappers_and_raise_from():
    inner = OSError("disk full")
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("writing failed") from exc
    except RuntimeError as outer:
        wrapped = FakeRayTaskError(FakeRayTaskError(outer))
    assert root_cause(wrapped) is inner
    assert one_line(wrapped) == "OSError: disk full"


def test_our_own_error_wins_and_keeps_its_message():
    ours = DataError("shard tessera.zarr/x is missing")
    try:
        raise ours from KeyError("k")
    except DataError as exc:
        wrapped = FakeRayTaskError(exc)
    assert root_cause(wrapped) is ours
    assert one_line(wrapped) == "shard tessera.zarr/x is missing"


@pytest.mark.parametrize("limit", [20, 300])
def test_one_line_is_one_line_and_bounded(limit):
    text = one_line(ValueError("a\n   b\tc " + "x" * 1000), limit)
    assert "\n" not in text and len(text) <= limit and text.startswith("ValueError: a b c")
    assert squash("short") == "short" and squash("y" * 50, 10) == "yyyyyyy..."
