"""Embeddings at labelled points, read through the client."""

from __future__ import annotations

import sys

import numpy as np

from tessera_ray.errors import UserInputError
from tessera_ray.heads.labels import LabelledPoints


def embeddings_at(root, points: LabelledPoints, year: int) -> tuple[np.ndarray, LabelledPoints]:
    """(n, 128) embeddings of the points that have one, and those points.

    Points without an embedding (outside the store, not processed, no data)
    are dropped with one warning line; none at all is an error.
    """
    values, status = root.points(points.lons, points.lats, year)
    keep = np.isfinite(values).all(axis=1)
    if not keep.any():
        kinds = ", ".join(f"{k}: {int(n)}" for k, n in zip(*np.unique(status.astype(str), return_counts=True)))
        raise UserInputError(
            f"none of the {len(keep)} points has an embedding in {root.url} for {year} ({kinds}); "
            "are they inside the published area and year?"
        )
    if not keep.all():
        print(f"tessera-ray: warning: {int((~keep).sum())} of {len(keep)} points have no embedding "
              f"(outside the store or no data) and are left out", file=sys.stderr)
    kept = LabelledPoints(points.lons[keep], points.lats[keep], points.target[keep], points.column,
                          None if points.split is None else points.split[keep])
    return values[keep], kept
