"""Sentinel-2 L2A rules as pure functions on arrays (TESSERA.md section 2).

Band order, the SCL cloud mask, the processing-baseline offset and the
per-date first-valid mosaic. No I/O here: the readers call these, and the
tests check them exactly on small hand-made arrays.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

#: Earth Search asset keys in the model's channel order (B04 B02 B03 B08 B8A B05 B06 B07 B11 B12).
BAND_KEYS: tuple[str, ...] = (
    "red", "blue", "green", "nir", "nir08", "rededge1", "rededge2", "rededge3", "swir16", "swir22",
)
S2_BANDS = len(BAND_KEYS)
"""Spectral bands of a Sentinel-2 time step (the cube's and the encoders' S2 channels)."""
#: ESA band names in the same order.
BAND_NAMES: tuple[str, ...] = ("B04", "B02", "B03", "B08", "B8A", "B05", "B06", "B07", "B11", "B12")
SCL_KEY = "scl"
#: SCL classes that make a pixel-date invalid: no data, defective, dark, cloud shadow, cloud medium/high.
INVALID_SCL: tuple[int, ...] = (0, 1, 2, 3, 8, 9)
#: BOA_ADD_OFFSET magnitude in DN from processing baseline 04.00 (2022-01-25).
BOA_OFFSET_DN = 1000
OFFSET_BASELINE = (4, 0)

_INVALID_LUT = np.ones(256, dtype=bool)
_INVALID_LUT[list(INVALID_SCL)] = False


def scl_valid(scl: np.ndarray) -> np.ndarray:
    """True where the SCL class counts as a clear observation."""
    return _INVALID_LUT[np.asarray(scl, dtype=np.uint8)]


def parse_baseline(value: str | float | None) -> tuple[int, int] | None:
    """``"04.00"`` -> (4, 0); None or unparseable -> None."""
    if value is None:
        return None
    try:
        major, _, minor = str(value).strip().partition(".")
        return int(major), int(minor or 0)
    except ValueError:
        return None


def boa_offset(
    collection: str,
    baseline: str | float | None,
    offset_applied: bool | None = None,
    acquired: datetime | None = None,
) -> int:
    """The DN offset to subtract from one scene so it matches the pre-2022 scale
    (a collection's COGs with native DNs; see :func:`decide_offset`)."""
    return decide_offset(baseline, offset_applied, acquired)[0]


def decide_offset(
    baseline: str | float | None,
    offset_applied: bool | None = None,
    acquired: datetime | None = None,
    harmonised_by_provider: bool = False,
) -> tuple[int, bool]:
    """(DN offset to subtract, whether the provider's ``boa_offset_applied`` flag disagrees).

    Decided from the processing baseline and the collection alone (TESSERA.md 2):
    * baseline < 04.00: nothing to remove.
    * ``sentinel-2-c1-l2a`` and Planetary Computer's ``sentinel-2-l2a``: the COGs
      keep ESA's native DNs, so from 04.00 on the +1000 is still in them: remove it.
    * Earth Search's old ``sentinel-2-l2a`` (items with ``earthsearch:*`` fields):
      its processing harmonised scenes of baseline 04.00 and later, so nothing
      is removed. Its ``earthsearch:boa_offset_applied`` flag is known to be
      wrong for some 2022-2025 scenes, so it is never trusted: it only counts
      as disagreeing where it says otherwise (offset applied before 04.00, or
      not applied from 04.00 on).
    A scene without a readable baseline is judged by its date (baseline 04.00
    started on 2022-01-25).
    """
    parsed = parse_baseline(baseline)
    if parsed is None:
        if acquired is None:
            return 0, False
        parsed = OFFSET_BASELINE if acquired.date() >= datetime(2022, 1, 25).date() else (0, 0)
    new_scale = parsed >= OFFSET_BASELINE
    disagrees = harmonised_by_provider and offset_applied is not None and bool(offset_applied) != new_scale
    if not new_scale or harmonised_by_provider:
        return 0, disagrees
    return BOA_OFFSET_DN, disagrees


def harmonise(dn: np.ndarray, offset: int) -> np.ndarray:
    """Remove ``offset`` from DNs; 0 stays 0 (no data), results clip at 0. uint16 out."""
    dn = np.asarray(dn)
    if offset == 0:
        return dn.astype(np.uint16, copy=False)
    shifted = np.clip(dn.astype(np.int32) - int(offset), 0, 65535).astype(np.uint16)
    return np.where(dn == 0, np.uint16(0), shifted)


def mosaic_owner(scls: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Which scene of one UTC date supplies each pixel, from the scenes' SCL alone.

    ``scls`` are (H, W) in mosaic order. A pixel goes to the first scene whose
    SCL is clear (mask 1); a pixel no scene sees clear goes to the first scene
    with data there (SCL != 0, mask 0), so a cloudy observation is still
    recorded; a pixel no scene covers gets owner -1. Owners are disjoint, so a
    reader can fetch each scene's bands independently and skip a scene that
    owns nothing. Returns (owner (H, W) int16, mask (H, W) uint8).
    """
    if not scls:
        raise ValueError("no scenes to mosaic")
    owner = np.full(scls[0].shape, -1, dtype=np.int16)
    clear = np.zeros(scls[0].shape, dtype=bool)
    for i, scl in enumerate(scls):
        valid = scl_valid(scl)
        win = valid & ~clear
        owner[win] = i
        clear |= win
        owner[(owner == -1) & (scl != 0)] = i
    return owner, clear.astype(np.uint8)


def mosaic_first_valid(
    bands: list[np.ndarray], scls: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the scenes of one UTC date: ``bands[i]`` (H, W, 10) by the owners of :func:`mosaic_owner`.

    Returns (bands (H, W, 10) uint16, mask (H, W) uint8).
    """
    owner, mask = mosaic_owner(scls)
    out = np.zeros((*owner.shape, bands[0].shape[-1]), dtype=np.uint16)
    for i, b in enumerate(bands):
        take = owner == i
        out[take] = b[take]
    return out, mask


def day_of_year(when: datetime) -> int:
    """Raw day of year 1..366 of the UTC date."""
    return int(when.timetuple().tm_yday)
