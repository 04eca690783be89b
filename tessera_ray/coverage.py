"""What a root holds, unit by unit: the coverage map users watch a planet run fill in.

Every unit of a year's manifest is drawn with its status; where the root can
be listed (a folder, S3), the run records add the units that the latest run
of each unit left unpublished (failed, or no scene at all). An HTTP root
cannot be listed, so there the map shows the manifests alone, and says so.

Status of a unit:

* ``published``: in the manifest with valid pixels;
* ``published, no data``: in the manifest, no valid pixel (all cloud, or sea
  the encoder masked);
* ``failed``: a run record names it failed and no manifest row has it;
* ``no scene``: a run record found no scene over it and no manifest row has it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tessera_ray.errors import DataError, UserInputError

if TYPE_CHECKING:
    import geopandas as gpd

PUBLISHED, EMPTY, FAILED, NO_SCENE = "published", "published, no data", "failed", "no scene"
STATUSES = (PUBLISHED, EMPTY, FAILED, NO_SCENE)
COLOURS = {PUBLISHED: "#1b9e4b", EMPTY: "#9ecae1", FAILED: "#d7301f", NO_SCENE: "#bdbdbd"}
RUNS_PREFIX = "manifests/runs/"


@dataclass(frozen=True)
class Coverage:
    """Units by year and status (a GeoDataFrame: year, unit_id, status, valid_pixels, created, geometry)."""

    url: str
    years: tuple[int, ...]
    frame: gpd.GeoDataFrame
    run_records: bool
    """Whether run records were read (False on roots that cannot be listed, e.g. HTTP)."""

    def counts(self, year: int) -> dict[str, int]:
        rows = self.frame[self.frame["year"] == year]
        return {s: int((rows["status"] == s).sum()) for s in STATUSES}


def read_coverage(url: str, year: int | None = None) -> Coverage:
    """The coverage of a root (``https://``, ``s3://`` or a folder), one year or all of them."""
    import geopandas as gpd
    import pandas as pd

    from tessera_ray.client import open_root
    from tessera_ray.store.manifest import read_manifest

    root = open_root(url)
    try:
        if year is None:
            years = tuple(root.years)
        else:
            root.year_index(year)  # a year the root does not have is one line naming those it has
            years = (int(year),)
        frames, listed = [], True
        for y in years:
            manifest = read_manifest(root.objects, y)
            published = set()
            if manifest is not None and len(manifest):
                published = set(manifest["unit_id"])
                valid = manifest["valid_pixels"].to_numpy()
                frames.append(gpd.GeoDataFrame({
                    "year": y, "unit_id": manifest["unit_id"].to_numpy(),
                    "status": [PUBLISHED if v > 0 else EMPTY for v in valid],
                    "valid_pixels": valid, "created": manifest["created"].astype(str).to_numpy(),
                }, geometry=manifest.geometry.to_numpy(), crs="EPSG:4326"))
            left, listed = _left_unpublished(root.objects, y, published)
            if left:
                frames.append(_unit_frame(y, left))
    finally:
        root.close()
    columns = ["year", "unit_id", "status", "valid_pixels", "created", "geometry"]
    frame = (gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326")
             if frames else gpd.GeoDataFrame({c: [] for c in columns}, geometry="geometry", crs="EPSG:4326"))
    return Coverage(url, years, frame[columns], listed)


def _left_unpublished(objects, year: int, published: set) -> tuple[dict[str, str], bool]:
    """unit id -> status (failed / no scene) from the year's run records, the latest run of a unit winning."""
    try:
        keys = sorted(k for k in objects.list(RUNS_PREFIX) if k.rsplit("/", 1)[-1].startswith(f"{year}-")
                      and k.endswith(".json"))
    except UserInputError:  # an HTTP root: not listable
        return {}, False
    status: dict[str, str] = {}
    for key in keys:  # run ids start with their UTC time: sorted keys are in run order
        try:
            record = json.loads(objects.get(key))
        except ValueError:
            raise DataError(f"run record {objects.child_url(key)} is not JSON") from None
        for unit in record.get("failed", {}):
            status[unit] = FAILED
        for unit in record.get("no_scenes", []):
            status[unit] = NO_SCENE
    return {u: s for u, s in status.items() if u not in published}, True


def _unit_frame(year: int, units: dict[str, str]):
    import geopandas as gpd

    from tessera_ray.grid import Unit

    ids = sorted(units)
    return gpd.GeoDataFrame({"year": year, "unit_id": ids, "status": [units[u] for u in ids],
                             "valid_pixels": 0, "created": ""},
                            geometry=[Unit.from_id(u).polygon_lonlat() for u in ids], crs="EPSG:4326")


def geojson_bytes(coverage: Coverage) -> bytes:
    """A GeoJSON FeatureCollection (RFC 7946, lon/lat) of every unit with its year and status."""
    return coverage.frame.to_json(drop_id=True).encode()


def png_bytes(coverage: Coverage, width_px: int = 1600) -> bytes:
    """A map per year (side by side): units filled by status over the land mask's coastline."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    frame = coverage.frame
    years = coverage.years or (0,)
    west, south, east, north = _extent(frame)
    aspect = (north - south) / max(east - west, 1e-9)
    fig, axes = plt.subplots(1, len(years), squeeze=False, dpi=100,
                             figsize=(width_px / 100, max(3.0, min(12.0, width_px / 100 / len(years) * aspect + 1))))
    coast = _coastline((west, south, east, north))
    for ax, year in zip(axes[0], years):
        if coast is not None and not coast.empty:
            coast.boundary.plot(ax=ax, color="#555555", linewidth=0.4)
        rows = frame[frame["year"] == year]
        for status in STATUSES:
            part = rows[rows["status"] == status]
            if len(part):
                part.plot(ax=ax, color=COLOURS[status], edgecolor="#333333", linewidth=0.2)
        counts = coverage.counts(year) if len(frame) else dict.fromkeys(STATUSES, 0)
        ax.set_title(f"{year}: " + ", ".join(f"{n:,} {s}" for s, n in counts.items() if n) if year else "no years")
        ax.set_xlim(west, east)
        ax.set_ylim(south, north)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    handles = [Patch(color=COLOURS[s], label=s) for s in STATUSES]
    fig.legend(handles=handles, loc="lower center", ncol=len(STATUSES), fontsize=8, frameon=False)
    note = "" if coverage.run_records else " (manifests only: this root cannot be listed for run records)"
    fig.suptitle(f"coverage of {coverage.url}{note}", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _extent(frame) -> tuple[float, float, float, float]:
    if not len(frame):
        return (-180.0, -80.0, 180.0, 84.0)
    w, s, e, n = frame.total_bounds
    pad = max(e - w, n - s) * 0.05 + 1e-3
    return (max(w - pad, -180.0), max(s - pad, -90.0), min(e + pad, 180.0), min(n + pad, 90.0))


def _coastline(extent):
    """The land mask's polygons inside the map, simplified to its scale (None if the mask is not installed)."""
    try:
        from tessera_ray.landmask import DRAWN_MASK, land_polygons
    except ImportError:  # pragma: no cover - roaring-landmask is a dependency
        return None
    import geopandas as gpd
    import shapely

    land = land_polygons(DRAWN_MASK)
    area = shapely.box(*extent)
    near = land.polygons[land.tree.query(area, predicate="intersects")]
    tolerance = max(extent[2] - extent[0], extent[3] - extent[1]) / 2000
    clipped = shapely.simplify(shapely.intersection(near, area), tolerance)
    return gpd.GeoSeries(clipped[~shapely.is_empty(clipped)], crs="EPSG:4326")
