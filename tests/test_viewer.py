"""The browser viewer in a real browser: Debian's Chromium driven by playwright-core from Node.

A small random store is published (``tessera-ray viewer --root``), served over loopback by
the server of ``tessera-ray serve``, and ``viewer/test/e2e.mjs`` opens its index.html and
uses it as a person would (mouse clicks, file upload, buttons, downloads). What the page
showed is compared here with what our Python client and scikit-learn give for the same data.

Needs ``/usr/bin/chromium``, Node.js and ``viewer/node_modules`` (``scripts/setup dev``
installs them); without them this test fails, it is not skipped.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from cli_helpers import run_cli

from tessera_ray import client as tc
from tessera_ray.grid import Unit, zone_grid
from tessera_ray.serve import StaticServer
from tessera_ray.store.layout import shard_key
from tessera_ray.store.testing import build_random_store, reversed_shard

REPO = Path(__file__).resolve().parents[1]
VIEWER = REPO / "viewer"
CHROMIUM = os.environ.get("TESSERA_RAY_CHROMIUM", "/usr/bin/chromium")
UNITS = [Unit(31, 4000, 160, 256), Unit(31, 4000, 161, 256)]  # the second is written in part
YEAR = 2024
CLASSES = ("crop", "forest", "water")
SCATTER_N = 2000
UNIT_RGB = {"complete": (0x00, 0xC8, 0x53), "partial": (0xFF, 0xAB, 0x00)}
BASEMAP_UNIT = Unit(31, 1415, 234, 256)  # near 5.8 E, 52.3 N: 2.8 degrees off the zone's meridian
TILE_ZOOM = 14  # the zoom the page picks for its first view of one unit (checked below)
MAP_BACKGROUND = (0xCF, 0xD8, 0xDC)  # #map-wrap, seen where no tile is drawn

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


def lonlat(row: int, col: int) -> tuple[float, float]:
    lon, lat = zone_grid(31).pixel_to_lonlat(row, col)
    return float(lon), float(lat)


def require_browser() -> str:
    node = shutil.which("node")
    missing = [
        what for what, ok in (
            (f"Chromium at {CHROMIUM} (apt-get install -y chromium)", Path(CHROMIUM).exists()),
            ("Node.js (node on PATH)", node is not None),
            (
                "viewer/node_modules/playwright-core (npm ci in viewer/)",
                (VIEWER / "node_modules" / "playwright-core").is_dir(),
            ),
        ) if not ok
    ]
    if missing:
        pytest.fail("the browser test needs " + "; ".join(missing) + " - scripts/setup dev installs them")
    return node


def publish(root: Path, capsys) -> None:
    code, out, err = run_cli(["viewer", "--root", str(root)], capsys)
    assert code == 0, err
    assert "index.html" in out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Roots under one served folder: a good one and three the viewer must refuse clearly."""
    base = tmp_path_factory.mktemp("viewer-site")
    good = base / "good"
    blocks = build_random_store(str(good), UNITS, years=(YEAR,))
    # a Zarr store that is not ours
    (base / "notours" / "tessera.zarr").mkdir(parents=True)
    (base / "notours" / "tessera.zarr" / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    # a store whose manifests are gone
    build_random_store(str(base / "nomanifest"), UNITS[:1], years=(YEAR,))
    shutil.rmtree(base / "nomanifest" / "manifests")
    # a Matryoshka store (prefix arrays of 16, 32 and 64 dims)
    build_random_store(str(base / "matryoshka"), UNITS[:1], years=(YEAR,), partial=False, depths=(16, 32, 64))
    # ...whose 128-dim shard has its chunks in reverse order (index rewritten): each passes its CRC32C
    # but none is at its fixed offset, so the page must see the tags fail and read through the index
    emb = tc.open_root(str(base / "matryoshka")).arrays[(31, "embeddings")]
    shard = base / "matryoshka" / shard_key(31, "embeddings", 0, UNITS[0].row, UNITS[0].col)
    shard.write_bytes(reversed_shard(shard.read_bytes(), emb.n_chunks, emb.fixed_stride))
    # a root for the basemap (its viewer.json is written once the tile server's address is known)
    build_random_store(str(base / "basemap"), [BASEMAP_UNIT], years=(YEAR,), partial=False)
    # the other shard layout: Blosc-zstd chunks, index at the end of the shard
    build_random_store(
        str(base / "zstd"), UNITS[:1], years=(YEAR,), partial=False, compression="zstd", index_location="end"
    )
    # a store with one flipped byte in the first chunk of its embeddings shard
    build_random_store(str(base / "corrupt"), UNITS[:1], years=(YEAR,), partial=False)
    shard = base / "corrupt" / "tessera.zarr" / "utm31" / "embeddings" / "c" / "0" / "0" / "4000" / "160"
    data = bytearray(shard.read_bytes())
    data[1036 + 100] ^= 0xFF  # inside chunk 0: after the 1028-byte index and the chunk's 8-byte tag
    shard.write_bytes(bytes(data))
    return base, blocks


@contextlib.contextmanager
def plain_http_server(folder: Path):
    """Python's http.server, which ignores Range (sends whole files), as on a laptop."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def points_spec(rng):
    u0, u1 = UNITS[0].window, UNITS[1].window
    clicks = {
        "valid": (u0.row + 100, u0.col + 50),
        "valid_partial_unit": (u1.row + 100, u1.col + 100),
        "no_data": (u0.row + 5, u0.col + 5),  # the NaN rectangle of random_block
        "not_processed": (u1.row + 5, u1.col + 5),  # the part of the partial unit never written
        "unpublished_unit": (u0.row + 100, u1.col + 256 + 20),  # a unit not in the manifest
    }
    labelled = [(int(r), int(c))
                for r, c in zip(rng.integers(u0.row + 30, u0.row + 256, 15), rng.integers(u0.col, u0.col + 256, 15))]
    holdout = [(int(r), int(c))
               for r, c in zip(rng.integers(u0.row + 30, u0.row + 256, 40), rng.integers(u0.col, u0.col + 256, 40))]
    return clicks, labelled, holdout


def tile_colour(x: int, y: int) -> tuple[int, int, int]:
    """A colour per tile, different for every tile within 180 of another (blue never the map's background)."""
    return 40 + x * 37 % 180, 40 + y * 59 % 180, 200 - (x + y) * 23 % 120


def lonlat_to_tile(z: int, lon, lat):
    """Fractional XYZ tile coordinates (Web Mercator)."""
    n = 2.0**z
    phi = np.radians(lat)
    return (np.asarray(lon) + 180.0) / 360.0 * n, (1.0 - np.log(np.tan(phi) + 1.0 / np.cos(phi)) / np.pi) / 2.0 * n


def write_tiles(folder: Path) -> None:
    """Solid PNG tiles at TILE_ZOOM around BASEMAP_UNIT; those with (x + y) % 5 == 0 left out (they fail: 404)."""
    from PIL import Image

    lon, lat = zone_grid(31).pixel_to_lonlat(BASEMAP_UNIT.window.row + 128, BASEMAP_UNIT.window.col + 128)
    x0, y0 = (int(v) for v in lonlat_to_tile(TILE_ZOOM, lon - 0.1, lat + 0.06))
    x1, y1 = (int(v) for v in lonlat_to_tile(TILE_ZOOM, lon + 0.1, lat - 0.06))
    for x in range(x0, x1 + 1):
        (folder / str(TILE_ZOOM) / str(x)).mkdir(parents=True, exist_ok=True)
        for y in range(y0, y1 + 1):
            if (x + y) % 5:
                Image.new("RGB", (256, 256), tile_colour(x, y)).save(folder / str(TILE_ZOOM) / str(x) / f"{y}.png")


def check_basemap(b: dict, tiles: Path, tile_url: str, out: Path) -> None:
    """The basemap page: the right tiles requested, each drawn where its lon/lat lies on the UTM map."""
    from PIL import Image

    assert b["outcome"] == "ready" and b["error"] == [], b["error"]
    assert b["layout"]["attribution"] == "tiles: test pattern"
    view, (left, top, right, bottom) = b["layout"]["view"], b["layout"]["map"]
    width, height, scale = right - left, bottom - top, view["scale"]
    grid = zone_grid(31)

    def lonlat_at(x, y):  # page px -> lon/lat, from the view the page reports (not from its own maths)
        col = view["cx"] + (np.asarray(x, "float64") - left - width / 2) / scale
        row = view["cy"] + (np.asarray(y, "float64") - top - height / 2) / scale
        return grid.pixel_to_lonlat(row - 0.5, col - 0.5)  # pixel_to_lonlat gives pixel centres

    # the zoom whose tile px is closest to a screen px at the view's centre
    _, lat_c = lonlat_at(left + width / 2, top + height / 2)
    zoom = round(np.log2(40075016.685578488 / 256 * np.cos(np.radians(lat_c)) * scale / 10))
    assert zoom == TILE_ZOOM == b["state"]["zoom"], (zoom, b["state"]["zoom"])
    # the tiles: those under 9 points on each side of the view (their bounding box), all requested once
    f = np.linspace(0, 1, 9)
    xs = np.r_[left + f * width, left + f * width, np.full(9, left), np.full(9, right)]
    ys = np.r_[np.full(9, top), np.full(9, bottom), top + f * height, top + f * height]
    tx, ty = lonlat_to_tile(zoom, *lonlat_at(xs, ys))
    expected = {(zoom, x, y)
                for x in range(int(tx.min()), int(tx.max()) + 1) for y in range(int(ty.min()), int(ty.max()) + 1)}
    shown = {(t["z"], t["x"], t["y"]) for t in b["state"]["tiles"]}
    requested = [tuple(int(v) for v in u[len(tile_url) + 1 : -4].split("/"))
                 for u in b["requested"] if u.startswith(tile_url)]
    assert shown == expected and sorted(requested) == sorted(expected), (sorted(shown ^ expected), sorted(requested))
    exists = {t: (tiles / str(t[0]) / str(t[1]) / f"{t[2]}.png").exists() for t in expected}
    assert {(t["z"], t["x"], t["y"]): t["status"] for t in b["state"]["tiles"]} == {
        t: "loaded" if ok else "failed" for t, ok in exists.items()}
    assert 0 < sum(exists.values()) < len(exists)  # some tiles drawn, some failed

    # colours on screen: a lattice of map points away from tile edges, overlays and unit outlines
    px, py = np.meshgrid(np.arange(np.ceil(left) + 3, right - 3, 11.0), np.arange(np.ceil(top) + 3, bottom - 3, 11.0))
    px, py = px.ravel(), py.ravel()
    free = np.ones(px.size, bool)
    for x0, y0, x1, y1 in b["layout"]["covered"]:
        free &= ~((px >= x0 - 3) & (px <= x1 + 3) & (py >= y0 - 3) & (py <= y1 + 3))
    in_unit = np.zeros(px.size, bool)

    def near(u, m):
        ux0, uy0, ux1, uy1 = left + u["x"], top + u["y"], left + u["x"] + u["size"], top + u["y"] + u["size"]
        return (px >= ux0 - m) & (px <= ux1 + m) & (py >= uy0 - m) & (py <= uy1 + m)

    for u in b["units"]:
        free &= ~(near(u, 4) & ~near(u, -4))  # the outline
        in_unit |= near(u, 0)
    # pixel centres of the screenshot are at +0.5
    fx, fy = lonlat_to_tile(zoom, *lonlat_at(px + 0.5, py + 0.5))
    edge = np.minimum.reduce([fx % 1, 1 - fx % 1, fy % 1, 1 - fy % 1]) * 256
    free &= edge > 3
    want = np.array([tile_colour(int(x), int(y)) if exists.get((zoom, int(x), int(y))) else MAP_BACKGROUND
                     for x, y in zip(fx, fy)])

    def colours(name):
        image = np.asarray(Image.open(out / name).convert("RGB"))
        return image[py.astype(int), px.astype(int)]

    # where antialiased triangle edges overlap, 8-bit premultiplied alpha rounds a level or two off;
    # neighbouring tiles differ by 23 levels or more
    def same(a, c):
        return np.abs(a.astype(int) - c).max(axis=1) <= 2
    both, hidden, off = (colours(b["shots"][k]) for k in ("both", "embeddingsHidden", "basemapHidden"))
    outside = free & ~in_unit
    assert outside.sum() > 500 and (want[outside] == MAP_BACKGROUND).all(axis=1).sum() > 20
    wrong = np.flatnonzero(~same(both[outside], want[outside]))
    assert not wrong.size, [(px[outside][i], py[outside][i], both[outside][i], want[outside][i]) for i in wrong[:5]]
    # the embeddings are drawn over the tiles, and with the embedding layer's opacity at 0 the tiles show there
    inside = free & in_unit
    assert inside.sum() > 100 and (~same(both[inside], want[inside])).mean() > 0.9
    assert same(hidden[free], want[free]).all()
    # with the basemap's opacity at 0 as well: the map's background only
    assert (off[free] == MAP_BACKGROUND).all()


def check_scatter(sc, reader, manifest, timings) -> None:
    """The scatter panel: N valid pixels in view, on the PCA of their values, coloured by class, brushed."""
    points = sc["points"]
    assert sc["count"] == len(points) == SCATTER_N and sc["total"] == manifest.valid_pixels.sum()
    assert len({(p["row"], p["col"]) for p in points}) == SCATTER_N
    V, status = reader.points(np.array([p["lon"] for p in points]), np.array([p["lat"] for p in points]), YEAR)
    assert (status == tc.VALID).all()
    # PC1 and PC2 of the same pixels' values (numpy), up to the sign of each axis
    Vc = V.astype("float64") - V.astype("float64").mean(axis=0)
    _, _, vt = np.linalg.svd(Vc, full_matrices=False)
    expected = Vc @ vt[:2].T
    page = np.array([p["pc"] for p in points])
    for k in range(2):
        sign = np.sign(page[:, k] @ expected[:, k])
        np.testing.assert_allclose(page[:, k], sign * expected[:, k], atol=1e-3 * np.abs(expected[:, k]).max())
    # coloured by the predicted class: one colour per class, two classes or more
    colour_of = {}
    for p in points:
        assert p["cls"] in CLASSES and colour_of.setdefault(p["cls"], p["colour"]) == p["colour"]
    assert len(colour_of) >= 2 and len(set(colour_of.values())) == len(colour_of)
    # the brush (a mouse drag on the scatter) selects the points inside its rectangle...
    x0, y0, x1, y1 = sc["brush"]
    xy = np.array([p["screen"] for p in points])
    def inside(m):
        return (xy[:, 0] >= x0 - m) & (xy[:, 0] <= x1 + m) & (xy[:, 1] >= y0 - m) & (xy[:, 1] <= y1 + m)
    selected = np.zeros(len(points), bool)
    selected[sc["selected"]] = True
    assert selected.sum() > 0 and selected[inside(-1.0)].all() and not selected[~inside(1.0)].any(), (
        sc["brush"], sc["box"], xy.min(0), xy.max(0))
    # ...and exactly those pixels are highlighted on the map
    assert sc["onMap"] == sc["selected"]
    # inspecting a sampled pixel rings its point
    assert sc["focus"] == SCATTER_N // 2
    assert "predicted class" in sc["info"]
    assert timings["scatter"] - timings["classify"] < 10_000, timings


def test_viewer_in_chromium(site, tmp_path, capsys):
    node = require_browser()
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    base, _ = site
    for name in ("good", "notours", "nomanifest", "corrupt", "matryoshka", "zstd"):
        if name == "notours":  # not a root: the command refuses, the viewer is written by hand
            code, _, err = run_cli(["viewer", "--root", str(base / name)], capsys)
            assert code == 2 and "not a tessera-ray root" in err
            from tessera_ray.viewer import publish_viewer

            publish_viewer(str(base / name))
        else:
            publish(base / name, capsys)

    clicks, labelled, holdout = points_spec(np.random.default_rng(7))
    out = Path(os.environ.get("TESSERA_RAY_TEST_ARTEFACTS", tmp_path)) / "viewer"
    out.mkdir(parents=True, exist_ok=True)
    write_tiles(tmp_path / "tiles")
    with (
        StaticServer(base) as server,
        plain_http_server(base) as plain_url,
        StaticServer(tmp_path / "tiles") as tile_server,
    ):
        template = f"{tile_server.url}/{{z}}/{{x}}/{{y}}.png"
        code, _, err = run_cli(["viewer", "--root", str(base / "basemap"), "--basemap", template,
                                "--basemap-attribution", "tiles: test pattern"], capsys)
        assert code == 0, err
        url = f"{server.url}/good/"
        reader = tc.open_root(url)
        lon_l, lat_l = zone_grid(31).pixel_to_lonlat(*np.array(labelled).T)
        X, status = reader.points(lon_l, lat_l, YEAR)
        assert (status == tc.VALID).all()
        y = np.array([CLASSES[i % 3] for i in range(len(labelled))])
        labels = {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(a), float(b)]},
             "properties": {"class": str(c)}}
            for a, b, c in zip(lon_l, lat_l, y)
        ]}
        (tmp_path / "labels.geojson").write_text(json.dumps(labels))
        spec = {
            "url": f"{url}index.html", "out": str(out), "year": YEAR, "chromium": CHROMIUM,
            "clicks": [{"name": k, "lon": lonlat(*v)[0], "lat": lonlat(*v)[1]} for k, v in clicks.items()],
            "labelsFile": str(tmp_path / "labels.geojson"),
            "labelClick": dict(zip(("lon", "lat"), lonlat(*clicks["valid_partial_unit"]))),
            "holdout": [{"lon": lonlat(*p)[0], "lat": lonlat(*p)[1]} for p in holdout],
            "scatterN": SCATTER_N,
            "bad": [
                {"name": "notours", "url": f"{server.url}/notours/index.html"},
                {"name": "nomanifest", "url": f"{server.url}/nomanifest/index.html"},
                {"name": "corrupt", "url": f"{server.url}/corrupt/index.html"},
                {"name": "matryoshka", "url": f"{server.url}/matryoshka/index.html", "click": lonlat(*clicks["valid"])},
                {"name": "norange", "url": f"{plain_url}/good/index.html"},
                {"name": "zstd",
                 "url": f"{server.url}/zstd/index.html?basemap={quote(template, safe='')}"
                        "&attribution=from%20the%20URL",
                 "click": lonlat(*clicks["valid"])},
            ],
            "basemap": {"url": f"{server.url}/basemap/index.html"},
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        run = subprocess.run([node, str(VIEWER / "test" / "e2e.mjs"), str(tmp_path / "spec.json")],
                             capture_output=True, text=True, timeout=110, cwd=VIEWER)
        assert run.returncode == 0, run.stderr[-3000:]
        seen = json.loads(run.stdout.strip().splitlines()[-1])

        # the page loaded with nothing wrong on the console or the network, and asked its own server only:
        # no basemap configured, no tile request
        assert seen["pageErrors"] == [] and seen["errors"] == []
        assert seen["mainRequests"] and all(u.startswith(f"{server.url}/") for u in seen["mainRequests"])
        assert [m for m in seen["console"] if m.startswith("main: error")] == []
        assert [r for r in seen["failedRequests"] if r.startswith("main:")] == []

        # the units drawn are the manifest's, outlined in their status colour
        manifest = reader.units(YEAR)
        assert sorted(u["unit_id"] for u in seen["units"]) == sorted(manifest.unit_id)
        valid_pixels = dict(zip(manifest.unit_id, manifest.valid_pixels))
        assert {u["unit_id"]: u["valid_pixels"] for u in seen["units"]} == valid_pixels
        for u in seen["units"]:
            assert tuple(u["outline"]) == UNIT_RGB[u["status"]], u
        assert {u["unit_id"]: u["status"] for u in seen["units"]} == {UNITS[0].id: "complete", UNITS[1].id: "partial"}

        # a clicked pixel shows exactly the values our client returns, or says why there are none
        for name, (row, col) in clicks.items():
            px = reader.pixel(*lonlat(row, col), YEAR)
            shown = seen["clicks"][name]
            assert shown["status"] == px.status, name
            if px.status == tc.VALID:
                np.testing.assert_array_equal(np.asarray(shown["values"], "float32"), px.values)
                np.testing.assert_array_equal(np.asarray(shown["api"], "float32"), px.values)
                assert shown["bars"]
            else:
                assert shown["values"] == [] and shown["api"] is None
        assert seen["clicks"]["no_data"]["statusText"] == "no data"
        assert seen["clicks"]["not_processed"]["statusText"] == "not processed"
        assert seen["clicks"]["unpublished_unit"]["statusText"] == "not processed"
        assert "not in the 2024 manifest" in seen["clicks"]["unpublished_unit"]["unitText"]
        assert seen["clicks"]["valid"]["unitText"].startswith(UNITS[0].id)

        # classifiers trained in the page predict what scikit-learn predicts on the same embeddings
        assert sorted(seen["classes"]) == list(CLASSES)
        lon_h, lat_h = zone_grid(31).pixel_to_lonlat(*np.array(holdout).T)
        H, hstatus = reader.points(lon_h, lat_h, YEAR)
        valid = hstatus == tc.VALID
        knn = KNeighborsClassifier(5).fit(X.astype("float64"), y).predict(H[valid].astype("float64"))
        page_knn = np.array(seen["classifiers"]["knn"]["predicted"], dtype=object)
        assert list(page_knn[valid]) == list(knn)
        assert all(p is None for p in page_knn[~valid])
        logistic = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        expected = logistic.fit(X.astype("float64"), y).predict(H[valid].astype("float64"))
        page_lr = np.array(seen["classifiers"]["logistic"]["predicted"], dtype=object)[valid]
        assert np.mean(page_lr == expected) >= 0.9, (list(page_lr), list(expected))
        for method in ("knn", "logistic"):
            got = seen["classifiers"][method]
            assert "training accuracy" in got["trainText"]
            shown = got["shown"]
            # a classified map in 2+ classes: every valid pixel in view in a class colour
            # (outlines and label dots cover some)
            assert sum(shown.values()) >= 0.9 * manifest.valid_pixels.sum(), shown
            assert sum(v > 0 for v in shown.values()) >= 2, shown

        check_scatter(seen["scatter"], reader, manifest, seen["timings"])
        fc = seen["scatterFalseColour"]  # before training: false colour (PC1-3), no classes
        assert fc["count"] == 300 and all(c is None for c in fc["cls"]) and "false colour" in fc["info"]
        assert all(c.startswith("rgb(") for c in fc["colours"]) and len(set(fc["colours"])) > 100

    # exports: labels as GeoJSON (the labels loaded), the map as PNG + world file
    exported = json.loads((out / "labels.geojson").read_text())
    assert [f["properties"]["class"] for f in exported["features"]] == list(y)
    assert np.allclose([f["geometry"]["coordinates"] for f in exported["features"]], np.c_[lon_l, lat_l])
    png = [n for n in seen["downloads"] if n.endswith(".png")]
    assert len(png) == 1 and f"{png[0][:-4]}.pgw" in seen["downloads"]
    world = [float(v) for v in (out / f"{png[0][:-4]}.pgw").read_text().split()]
    assert world[0] == 10.0 and world[3] == -10.0
    image = Image.open(out / png[0])
    assert image.size[0] >= 256 and image.size[1] >= 256

    # bad roots: one clear message in the page, no uncaught error
    bad = seen["bad"]
    assert bad["notours"]["outcome"] == "rejected" and "not a tessera-ray root" in bad["notours"]["error"]
    assert bad["nomanifest"]["outcome"] == "rejected" and "no manifests" in bad["nomanifest"]["error"]
    assert bad["corrupt"]["outcome"] == "rejected" and "corrupt" in bad["corrupt"]["error"]
    assert "CRC32C" in bad["corrupt"]["error"]
    assert "corrupt/tessera.zarr/utm31/embeddings/c/0/0/4000/160" in bad["corrupt"]["error"]
    assert not [e for e in seen["pageErrors"]]
    # a zstd store decodes (Blosc in the worker): its first view and a clicked pixel
    assert bad["zstd"]["outcome"] == "ready" and bad["zstd"]["error"] is None
    np.testing.assert_array_equal(np.asarray(bad["zstd"]["pixel"], "float32"),
                                  tc.open_root(str(base / "zstd")).pixel(*lonlat(*clicks["valid"]), YEAR).values)
    # a server that ignores Range: small objects are read whole, and the page says so
    assert bad["norange"]["outcome"] == "ready" and bad["norange"]["rangeWarning"]
    assert not bad["good" if "good" in bad else "matryoshka"]["rangeWarning"]
    # a label clicked by hand is where the click was
    assert np.allclose(seen["labelClick"], [lonlat(*clicks["valid_partial_unit"])], atol=1e-9)
    # a Matryoshka store's first view (dims 0, 1, 2) reads only the 16-dim prefix array and scales,
    # at their fixed offsets: no shard index, one request per array (the unit's chunks are one run)
    m = bad["matryoshka"]
    assert m["outcome"] == "ready" and m["error"] is None and "read at depth 16" in m["legend"]
    chunks = [p for p in m["requestedAtReady"] if "/c/" in p]
    assert sorted(chunks) == sorted(f"/matryoshka/{shard_key(31, name, 0, UNITS[0].row, UNITS[0].col)}"
                                    for name in ("embeddings_d16", "scales")), chunks
    assert "index" not in m["statsAtReady"]["byKind"] and m["statsAtReady"]["byKind"]["chunks"]["requests"] == 2
    # its 128-dim shard with chunks out of place (CRC-valid): the tags fail, the index is read, the values are right
    # (at the pixel the panel says was clicked, which is the target: e2e.mjs clicks once the page's layout has
    # stopped moving; a click made while the panels filled in once landed 7 rows below it)
    clicked = m["clickedAt"]
    landed = np.ravel(zone_grid(31).lonlat_to_pixel(*clicked))
    assert np.abs(landed - np.array(clicks["valid"])).max() <= 1, (landed, clicks["valid"])
    np.testing.assert_array_equal(np.asarray(m["pixel"], "float32"),
                                  tc.open_root(str(base / "matryoshka")).pixel(*clicked, YEAR).values)
    assert m["stats"]["byKind"]["index"]["requests"] == 1 and m["stats"]["fixedOffsetFallbacks"] == 1

    # a basemap: from viewer.json (the right tiles, drawn beneath the embeddings in their place on the
    # UTM grid, a failed tile blank), or from ?basemap= (the zstd page: tiles asked for, attribution shown)
    check_basemap(seen["basemap"], tmp_path / "tiles", tile_server.url, out)
    z = bad["zstd"]
    assert z["basemap"]["template"] == template and z["attribution"] == "from the URL"
    assert z["basemap"]["tiles"] and any(u.startswith(tile_server.url) for u in z["requested"])
    assert all(b["basemap"] is None and not any(u.startswith(tile_server.url) for u in b["requested"])
               for name, b in bad.items() if name != "zstd")

    # every view saved as a screenshot, none blank
    shots = sorted(out.glob("[1-7]-*.png"))
    assert len(shots) >= 10, shots
    for shot in shots:
        colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 20, f"{shot.name} looks blank"
