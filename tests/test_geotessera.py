"""The real geotessera 0.11 client reads what we publish: the Zarr store over HTTP, and the npy export offline."""

from __future__ import annotations

from contextlib import ExitStack

import geotessera  # noqa: F401 - scripts/setup dev installs 0.11; a missing reader must fail, not skip
import numpy as np
import pytest

from tessera_ray import client as tc
from tessera_ray.cli import main
from tessera_ray.grid import Tile, Unit, zone_grid
from tessera_ray.serve import StaticServer
from tessera_ray.store.testing import build_random_store

# units around (3.0 E, 83.95 N) in zone 31 holding the tiles grid_2.95_83.95 and grid_3.05_83.95
# whole: tiles this far north are ~120 px wide, so a tile costs megabytes, not hundreds
UNITS = [Unit(31, r, c, 256) for r in range(36, 41) for c in (159, 160)]

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
TILE_BBOX = "2.96,83.91,3.04,83.99"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Build and serve the random units once per layout: ``stores(compression) -> (root, server, blocks)``."""
    built, servers = {}, ExitStack()

    def get(compression: str):
        if compression not in built:
            root = tmp_path_factory.mktemp(f"gt-store-{compression}")
            blocks = build_random_store(str(root), UNITS, years=(2024,), partial=False, compression=compression)
            built[compression] = (root, servers.enter_context(StaticServer(root)), blocks)
        return built[compression]

    with servers:
        yield get


@pytest.fixture(scope="module", params=["none", "zstd"], ids=["fixed-offsets", "zstd"])
def published(request, stores):
    """The same units in both layouts: raw fixed-offset shards and Blosc-zstd shards."""
    return stores(request.param)


def geotessera_over_http(url: str):
    """GeoTesseraZarr on our root over plain HTTP (its own obstore HTTP store, http allowed on loopback)."""
    from geotessera import GeoTesseraZarr
    from obstore.store import HTTPStore
    from zarr.storage import ObjectStore

    http = HTTPStore.from_url(f"{url}/tessera.zarr", client_options={"allow_http": True})
    return GeoTesseraZarr(ObjectStore(http, read_only=True))


@pytest.mark.slow
def test_geotessera_zarr_reads_our_store_over_http(published):
    root, server, blocks = published
    gz = geotessera_over_http(server.url)
    assert gz.years == [2024] and gz.n_bands == 128
    rng = np.random.default_rng(3)
    w0, w1 = UNITS[0].window, UNITS[-1].window
    rows = rng.integers(w0.row, w1.row + 256, 400)
    cols = rng.integers(w0.col, w1.col + 256, 400)
    lon, lat = zone_grid(31).pixel_to_lonlat(rows, cols)
    theirs = gz.sample_points(list(zip(lon, lat)), 2024, search_px=0)
    ours, status = tc.open_root(server.url).points(lon, lat, 2024)
    np.testing.assert_array_equal(theirs, ours)
    assert (status == tc.VALID).sum() > 300 and (status == tc.NODATA).sum() > 0
    # one region, native grid: same pixels, same transform
    cx, cy = UNITS[2].polygon_lonlat().centroid.coords[0]
    bbox = (cx - 0.004, cy - 0.004, cx + 0.004, cy + 0.004)
    mosaic, transform, crs = gz.read_region(bbox, 2024)
    (part,) = tc.open_root(server.url).region(bbox, 2024)
    assert crs == part.crs == "EPSG:32631"
    # geotessera selects by pixel centres, we by covering window: compare on the common pixels
    dc = round((transform.c - part.transform.c) / 10)
    dr = round((part.transform.f - transform.f) / 10)
    h, w = mosaic.shape[:2]
    np.testing.assert_array_equal(mosaic, part.embeddings[dr : dr + h, dc : dc + w])


@pytest.mark.slow
def test_export_geotessera_tiles_read_offline_by_geotessera(stores, tmp_path):
    """The export reads through our client (both layouts compared above), so the default layout is enough."""
    from geotessera import GeoTessera

    root, server, blocks = stores("none")
    out = tmp_path / "gt"
    main(["export-geotessera", "--root", server.url, "--year", "2024", "--out", str(out), "--bbox", TILE_BBOX])
    tiles = sorted((out / "global_0.1_degree_representation" / "2024").iterdir())
    assert [t.name for t in tiles] == ["grid_2.95_83.95", "grid_3.05_83.95"]
    # registries: the columns geotessera reads, sizes of the files as written
    import pandas as pd

    manifest = pd.read_parquet(out / "manifest.parquet")
    columns = {"year", "lon", "lat", "grid_size", "scales_size", "grid_path", "scales_path", "lon_i", "lat_i"}
    assert columns <= set(manifest)
    for row in manifest.itertuples():
        assert (out / row.grid_path).stat().st_size == row.grid_size
        assert (out / row.scales_path).stat().st_size == row.scales_size
        assert (row.lon_i, row.lat_i) == (round(row.lon * 100), round(row.lat * 100))
    masks = pd.read_parquet(out / "landmasks.parquet")
    assert all((out / k).stat().st_size == n for k, n in zip(masks.key, masks.file_size))
    sums = (tiles[0] / "SHA256").read_text().split()
    import hashlib

    assert sums[0] == hashlib.sha256((tiles[0] / sums[1]).read_bytes()).hexdigest()
    gt = GeoTessera(registry_dir=out, embeddings_dir=out, cache_dir=tmp_path / "cache")
    ours = tc.open_root(server.url)
    for tile_dir in tiles:
        _, lon, lat = tile_dir.name.split("_")
        tile = Tile(float(lon), float(lat))
        emb, crs, transform = gt.fetch_embedding(tile.lon, tile.lat, 2024)
        assert crs.to_epsg() == 32631 and transform == tile.transform
        assert emb.shape == (tile.window.height, tile.window.width, 128)
        (part,) = [p for p in ours.region(tile.bounds, 2024) if p.zone == 31]
        dr, dc = tile.window.row - part.window.row, tile.window.col - part.window.col
        np.testing.assert_array_equal(emb, part.embeddings[dr : dr + emb.shape[0], dc : dc + emb.shape[1]])
        assert np.isfinite(emb).any()
    # sampling points through geotessera's tile path gives our numbers
    rng = np.random.default_rng(5)
    lon, lat = rng.uniform(2.91, 3.09, 300), rng.uniform(83.905, 83.995, 300)
    theirs = gt.sample_embeddings_at_points(list(zip(lon, lat)), 2024, auto_download=False)
    np.testing.assert_array_equal(theirs, ours.points(lon, lat, 2024)[0])


@pytest.mark.slow
def test_geotessera_reads_our_matryoshka_store_at_depth_16(tmp_path):
    """geotessera 0.11 finds the prefix arrays through geoemb:depths and reads them as our client does."""
    root = tmp_path / "v2"
    build_random_store(str(root), UNITS[:4], years=(2024,), partial=False, depths=(16, 32))
    with StaticServer(root) as server:
        gz = geotessera_over_http(server.url)
        assert gz.depths == {16: "embeddings_d16", 32: "embeddings_d32", 128: "embeddings"}
        rng = np.random.default_rng(5)
        w0, w1 = UNITS[0].window, UNITS[3].window
        rows = rng.integers(w0.row, w1.row + 256, 300)
        cols = rng.integers(w0.col, w1.col + 256, 300)
        lon, lat = zone_grid(31).pixel_to_lonlat(rows, cols)
        theirs = gz.sample_points(list(zip(lon, lat)), 2024, search_px=0, depth=16)
        ours, status = tc.open_root(server.url).points(lon, lat, 2024, depth=16)
        assert theirs.shape == ours.shape == (300, 16)
        np.testing.assert_array_equal(theirs, ours)
        assert (status == tc.VALID).sum() > 200
        # and the full array still agrees with its first 16 dims
        full = gz.sample_points(list(zip(lon, lat)), 2024, search_px=0)
        np.testing.assert_array_equal(full[:, :16], theirs)
        with pytest.raises(ValueError, match="depth 64 not in this store"):
            gz.sample_points(list(zip(lon, lat)), 2024, depth=64)
