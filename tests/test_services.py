"""The world's local services: STAC API, COGs over HTTP, S3, ``tessera-ray services``.

Every search expectation is computed here from the world's item files with
shapely and datetime, independently of the server's own search code.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import requests
from shapely.geometry import Polygon, box, shape

BIN = Path(sys.executable).parent
PAGE = 500  # a few pages per search over the test world's ~1,000 items


# --------------------------------------------------------------------------- the world's items, read directly


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@pytest.fixture(scope="module")
def items(world) -> dict[str, dict]:
    found = {}
    for path in sorted((world / "stac").glob("*/*.json")):
        if path.name != "collection.json":
            doc = json.loads(path.read_text())
            doc["_path"] = path
            found[doc["id"]] = doc
    assert len(found) >= 6, "the test world should have several items"
    return found


def expect(items, test) -> set[str]:
    return {iid for iid, it in items.items() if test(it)}


def collection_of(item: dict) -> str:
    return item["_path"].parent.name


@pytest.fixture(scope="module")
def client(stac_api):
    from pystac_client import Client

    return Client.open(stac_api.url)


def found(search) -> list[str]:
    return [it["id"] for it in search.items_as_dicts()]  # pystac Items cost ~5 ms each


def strict_subset(expected: set[str], items) -> None:
    """A search test is only meaningful if it keeps some items and drops others."""
    assert 0 < len(expected) < len(items), expected


# --------------------------------------------------------------------------- STAC API


def test_landing_page_and_conformance(client, world):
    from pystac_client.conformance import ConformanceClasses

    for cls in (ConformanceClasses.ITEM_SEARCH, ConformanceClasses.QUERY, ConformanceClasses.FILTER,
                ConformanceClasses.COLLECTIONS):
        assert client.conforms_to(cls), cls
    folders = {p.name for p in (world / "stac").iterdir() if p.is_dir()}
    assert {c.id for c in client.get_collections()} == folders


def test_collection_items_endpoint(stac_api, items):
    for cid in {collection_of(it) for it in items.values()}:
        got, url = [], f"{stac_api.url}/collections/{cid}/items?limit={PAGE}"
        while url:
            page = requests.get(url).json()
            got += [f["id"] for f in page["features"]]
            url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
        assert sorted(got) == sorted(expect(items, lambda it, c=cid: collection_of(it) == c))


def test_item_endpoint_and_404(stac_api, items):
    iid, item = next(iter(items.items()))
    r = requests.get(f"{stac_api.url}/collections/{collection_of(item)}/items/{iid}")
    assert r.status_code == 200 and r.json()["id"] == iid
    assert requests.get(f"{stac_api.url}/collections/{collection_of(item)}/items/nope").status_code == 404
    assert requests.get(f"{stac_api.url}/collections/nope").status_code == 404


def _corner_box(items) -> tuple[float, float, float, float]:
    """A small box at a corner of some item that not every item covers."""
    geoms = [shape(it["geometry"]) for it in items.values()]
    for g in geoms:
        w, s, e, n = g.bounds
        for x, y in ((w, s), (w, n), (e, s), (e, n)):
            dx, dy = (e - w) * 0.05, (n - s) * 0.05
            candidate = (min(x, x + (dx if x == w else -dx)), min(y, y + (dy if y == s else -dy)),
                         max(x, x + (dx if x == w else -dx)), max(y, y + (dy if y == s else -dy)))
            hits = sum(gg.intersects(box(*candidate)) for gg in geoms)
            if 0 < hits < len(geoms):
                return candidate
    raise AssertionError("every item covers every corner: no bbox separates them")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_bbox(client, items, method):
    bbox = _corner_box(items)
    expected = expect(items, lambda it: shape(it["geometry"]).intersects(box(*bbox)))
    strict_subset(expected, items)
    assert sorted(found(client.search(bbox=list(bbox), limit=PAGE, method=method))) == sorted(expected)


def test_search_intersects_polygon(client, items):
    w, s, e, n = _corner_box(items)
    triangle = Polygon([(w, s), (e, s), (w, n)])
    expected = expect(items, lambda it: shape(it["geometry"]).intersects(triangle))
    strict_subset(expected, items)
    got = found(client.search(intersects=triangle.__geo_interface__, limit=PAGE))
    assert sorted(got) == sorted(expected)


def _times(items) -> list[datetime]:
    return sorted({_when(it["properties"]["datetime"]) for it in items.values()})


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_closed_date_range(client, items, method):
    times = _times(items)
    lo, hi = times[len(times) // 4], times[(3 * len(times)) // 4]
    expected = expect(items, lambda it: lo <= _when(it["properties"]["datetime"]) <= hi)
    strict_subset(expected, items)
    got = found(client.search(datetime=f"{_iso(lo)}/{_iso(hi)}", limit=PAGE, method=method))
    assert sorted(got) == sorted(expected)


def test_search_open_ranges_and_instant(client, items):
    times = _times(items)
    mid = times[len(times) // 2]
    before = expect(items, lambda it: _when(it["properties"]["datetime"]) <= mid)
    after = expect(items, lambda it: _when(it["properties"]["datetime"]) >= mid)
    at = expect(items, lambda it: _when(it["properties"]["datetime"]) == mid)
    strict_subset(before, items)
    strict_subset(after, items)
    assert sorted(found(client.search(datetime=f"../{_iso(mid)}", limit=PAGE))) == sorted(before)
    assert sorted(found(client.search(datetime=f"{_iso(mid)}/..", limit=PAGE))) == sorted(after)
    assert sorted(found(client.search(datetime=_iso(mid), limit=PAGE))) == sorted(at)


def test_search_by_collection(client, items):
    for cid in {collection_of(it) for it in items.values()}:
        expected = expect(items, lambda it, c=cid: collection_of(it) == c)
        strict_subset(expected, items)
        assert sorted(found(client.search(collections=[cid], limit=PAGE))) == sorted(expected)


def _cloud_threshold(items) -> float:
    covers = sorted(it["properties"]["eo:cloud_cover"] for it in items.values()
                    if "eo:cloud_cover" in it["properties"])
    assert len(set(covers)) >= 2, "the world's S2 items should differ in cloud cover"
    return covers[len(covers) // 2]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_cloud_cover_query_extension(client, items, method):
    limit = _cloud_threshold(items)
    expected = expect(items, lambda it: it["properties"].get("eo:cloud_cover", math.inf) < limit)
    strict_subset(expected, items)
    got = found(client.search(query={"eo:cloud_cover": {"lt": limit}}, limit=PAGE, method=method))
    assert sorted(got) == sorted(expected)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_cloud_cover_cql2_filter(client, items, method):
    limit = _cloud_threshold(items)
    s2 = next(collection_of(it) for it in items.values() if "eo:cloud_cover" in it["properties"])
    expected = expect(items, lambda it: collection_of(it) == s2 and it["properties"]["eo:cloud_cover"] <= limit)
    strict_subset(expected, items)
    cql = {"op": "and", "args": [
        {"op": "=", "args": [{"property": "collection"}, s2]},
        {"op": "<=", "args": [{"property": "eo:cloud_cover"}, limit]},
    ]}
    got = found(client.search(filter=cql, filter_lang="cql2-json", limit=PAGE, method=method))
    assert sorted(got) == sorted(expected)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_paging_returns_every_match_once(client, items, method):
    cid = collection_of(next(iter(items.values())))
    some = sorted(iid for iid, it in items.items() if collection_of(it) == cid)[:7]
    search = client.search(collections=[cid], ids=some, limit=2, method=method)
    pages = [[it.id for it in page.items] for page in search.pages()]
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    flat = [iid for page in pages for iid in page]
    assert sorted(flat) == some


def test_search_by_ids(client, items):
    wanted = sorted(items)[:3]
    assert sorted(found(client.search(ids=wanted))) == wanted


def test_asset_hrefs_point_at_the_http_server(stac_api, items, http_server):
    page = requests.post(f"{stac_api.url}/search", json={"limit": len(items)}).json()
    assert page["numberReturned"] == len(items)
    for feature in page["features"]:
        source = items[feature["id"]]
        assert feature["assets"].keys() == source["assets"].keys()
        for key, asset in feature["assets"].items():
            assert asset["href"] == f"{http_server.url}/{source['assets'][key]['href']}"
    href = next(iter(page["features"][0]["assets"].values()))["href"]
    assert requests.head(href).status_code == 200


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bbox": "1,2,3"}, "bbox"),
        ({"datetime": "yesterday"}, "timestamp"),
        ({"datetime": "2024-05-01T00:00:00Z/2024-01-01T00:00:00Z"}, "ends before it starts"),
        ({"filter": "eo:cloud_cover < 10", "filter-lang": "cql2-text"}, "cql2-text"),
        ({"filter": '{"op": "like", "args": [{"property": "id"}, "x%"]}'}, "not supported"),
        ({"limit": "0"}, "limit"),
    ],
)
def test_bad_searches_are_400_with_a_reason(stac_api, params, message):
    r = requests.get(f"{stac_api.url}/search", params=params)
    assert r.status_code == 400
    assert message in r.json()["description"]


def test_failing_block_drops_unanswered_failures(stac_api):
    with stac_api.failing(5, status=503):
        assert requests.get(f"{stac_api.url}/").status_code == 503
    assert requests.get(f"{stac_api.url}/").status_code == 200


def test_injected_failures_then_recovery(stac_api):
    stac_api.fail_next(2, status=502)
    stac_api.fail_next(1, status=429)
    codes = [requests.get(f"{stac_api.url}/search", params={"limit": 1}) for _ in range(4)]
    assert [r.status_code for r in codes] == [502, 502, 429, 200]
    assert codes[2].headers["Retry-After"] == "0"
    assert codes[3].json()["numberReturned"] == 1


def test_fail_first_at_start(world, http_server):
    from tessera_ray.synthetic.services import StacServer

    with StacServer(world, http_server.url, fail_first=1, fail_status=503) as api:
        assert requests.get(api.url + "/").status_code == 503
        assert requests.get(api.url + "/").status_code == 200
        assert api.stats.snapshot()["requests"] == 2


# --------------------------------------------------------------------------- COGs over HTTP


def _cog_assets(items) -> list[tuple[dict, str]]:
    """One COG asset of each collection (with raster:bands where the item has them)."""
    chosen = {}
    for item in items.values():
        for key, asset in item["assets"].items():
            if asset["href"].endswith(".tif") and "data" in asset.get("roles", ["data"]):
                chosen.setdefault(collection_of(item), (item, key))
    return list(chosen.values())


def _a_cog(items) -> str:
    item, key = _cog_assets(items)[0]
    return item["assets"][key]["href"]


def assert_same_profile(remote, local) -> None:
    """dtype, nodata (NaN included), block layout, tiling, compression, CRS, transform."""
    a, b = dict(remote.profile), dict(local.profile)
    na, nb = a.pop("nodata"), b.pop("nodata")
    assert a == b
    assert na == nb or (math.isnan(na) and math.isnan(nb))


def test_cogs_over_vsicurl_equal_local_reads(world, items, client, http_server):
    import rasterio

    pairs = _cog_assets(items)
    assert len(pairs) >= 2
    scaled = 0
    for item, key in pairs:
        served = client.get_collection(collection_of(item)).get_item(item["id"])
        href = served.assets[key].href
        bands = served.assets[key].extra_fields.get("raster:bands")
        assert bands == item["assets"][key].get("raster:bands")
        if bands and "scale" in bands[0]:
            scaled += 1  # the L2A offset lives in the item, not in the GeoTIFF
        local_path = world / item["assets"][key]["href"]
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
            with rasterio.open(f"/vsicurl/{href}") as remote, rasterio.open(local_path) as local:
                assert_same_profile(remote, local)
                assert remote.block_shapes == local.block_shapes
                assert remote.overviews(1) == local.overviews(1) and local.overviews(1)
                assert remote.tags() == local.tags()
                assert remote.scales == local.scales and remote.offsets == local.offsets
                if bands:
                    assert bands[0]["data_type"] == remote.dtypes[0]
                    assert bands[0]["nodata"] == remote.nodata or math.isnan(remote.nodata)
                np.testing.assert_array_equal(remote.read(1), local.read(1))
                factor = local.overviews(1)[-1]
                shape_ = (local.height // factor, local.width // factor)
                np.testing.assert_array_equal(remote.read(1, out_shape=shape_), local.read(1, out_shape=shape_))
    assert scaled, "no COG asset with raster:bands scale/offset was compared"


def test_s1_orbit_direction_tag_over_http(world, items, http_server):
    import rasterio

    from tessera_ray.synthetic import S1_COLLECTION

    s1 = [it for it in items.values() if collection_of(it) == S1_COLLECTION][:4]
    assert s1
    for item in s1:
        href = next(a["href"] for a in item["assets"].values() if a["href"].endswith(".tif"))
        with rasterio.open(world / href) as local:
            direction = local.tags()["ORBIT_PASS_DIRECTION"]
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
            with rasterio.open(f"/vsicurl/{http_server.url}/{href}") as remote:
                assert remote.tags()["ORBIT_PASS_DIRECTION"] == direction
        assert direction in ("ASCENDING", "DESCENDING")


# --------------------------------------------------------------------------- S3


@pytest.fixture(scope="module")
def world_bucket(s3_server, world, items):
    """One item's COG folder in a public bucket, the S1 items in a private one."""
    from tessera_ray.synthetic import S1_COLLECTION

    folder = (world / _a_cog(items)).parent
    s3_server.create_bucket("world-pub", public_read=True)
    s3_server.create_bucket("world-private")
    n = s3_server.upload_dir(folder, "world-pub", f"w/{folder.relative_to(world).as_posix()}")
    assert n == sum(1 for p in folder.iterdir() if p.is_file())
    s3_server.upload_dir(world / "stac" / S1_COLLECTION, "world-private", "items")
    return "world-pub"


def test_boto3_range_get(s3_server, world_bucket, world, items):
    href = _a_cog(items)
    local = (world / href).read_bytes()
    got = s3_server.client().get_object(Bucket=world_bucket, Key=f"w/{href}", Range="bytes=-100")
    assert got["Body"].read() == local[-100:]
    assert got["ContentRange"] == f"bytes {len(local) - 100}-{len(local) - 1}/{len(local)}"


def test_s3fs_reads_with_the_env(s3_server, world_bucket, world, monkeypatch):
    import s3fs

    from tessera_ray.synthetic import S1_COLLECTION

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    fs = s3fs.S3FileSystem()
    keys = fs.ls("world-private/items")
    local = sorted(p.name for p in (world / "stac" / S1_COLLECTION).iterdir())
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == local
    name = local[0]
    assert fs.cat(f"world-private/items/{name}") == (world / "stac" / S1_COLLECTION / name).read_bytes()


def test_gdal_vsis3_reads_a_cog(s3_server, world_bucket, world, items, monkeypatch):
    """GDAL takes the endpoint and credentials from the environment (rasterio refuses them as options)."""
    import rasterio

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    href = _a_cog(items)
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        with rasterio.open(f"/vsis3/{world_bucket}/w/{href}") as remote, rasterio.open(world / href) as local:
            assert_same_profile(remote, local)
            np.testing.assert_array_equal(remote.read(1), local.read(1))


def test_public_bucket_is_anonymous_readable_private_is_not(s3_server, world_bucket, items):
    r = requests.get(f"{s3_server.endpoint_url}/{world_bucket}/w/{_a_cog(items)}", headers={"Range": "bytes=0-3"})
    assert r.status_code == 206 and r.headers["Content-Type"] == "image/tiff"
    key = next(iter(s3_server.client().list_objects_v2(Bucket="world-private")["Contents"]))["Key"]
    assert requests.get(f"{s3_server.endpoint_url}/world-private/{key}").status_code == 403


# --------------------------------------------------------------------------- tessera-ray services


def _three_free_ports() -> int:
    import socket

    for base in range(20_000 + (os.getpid() % 997) * 37, 60_000, 101):
        try:
            socks = [socket.create_server(("127.0.0.1", base + i)) for i in range(3)]
        except OSError:
            continue
        for sock in socks:
            sock.close()
        return base
    raise AssertionError("no three consecutive free ports")


def test_services_command_end_to_end(world, s3_server):
    base = _three_free_ports()
    proc = subprocess.Popen(
        [str(BIN / "tessera-ray"), "services", "--world", str(world), "--port-base", str(base)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        urls = json.loads(line)
        assert [urls[k] for k in ("http", "stac", "s3")] == [f"http://127.0.0.1:{base + i}" for i in range(3)]
        assert urls["bucket"] == "tessera-world"
        assert all(secret not in line for secret in (s3_server.env()["AWS_SECRET_ACCESS_KEY"], "SECRET"))
        assert requests.get(f"{urls['http']}/world.json").json() == json.loads((world / "world.json").read_text())
        page = requests.post(f"{urls['stac']}/search", json={"limit": 1}).json()
        href = next(iter(page["features"][0]["assets"].values()))["href"]
        assert href.startswith(urls["http"] + "/")
        assert requests.get(href, headers={"Range": "bytes=0-3"}).content in (b"II*\x00", b"MM\x00*")
        relative = href.removeprefix(urls["http"] + "/")
        from_s3 = requests.get(f"{urls['s3']}/{urls['bucket']}/{relative}")  # anonymous: the bucket is public
        assert from_s3.content == (world / relative).read_bytes()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    out, err = proc.communicate()
    assert out == "" and err == ""


def test_services_command_missing_world(tmp_path):
    proc = subprocess.run([str(BIN / "tessera-ray"), "services", "--world", str(tmp_path / "absent")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such folder" in lines[0]


def test_services_command_busy_port(world):
    import socket

    base = _three_free_ports()
    with socket.create_server(("127.0.0.1", base + 1)):
        proc = subprocess.run(
            [str(BIN / "tessera-ray"), "services", "--world", str(world), "--port-base", str(base)],
            capture_output=True, text=True, timeout=120,
        )
    assert proc.returncode == 3
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{base + 1}" in lines[0]


def test_s3_server_busy_port_is_a_clear_error(s3_server):
    from tessera_ray.errors import ServiceError
    from tessera_ray.synthetic.services import S3Server

    with pytest.raises(ServiceError, match="cannot listen"):
        S3Server(port=s3_server.port).start()



# --------------------------------------------------------------------------- search semantics on hand-made items


def _item(iid, lon, when, cloud=None, collection="c1"):
    props = {"datetime": when}
    if cloud is not None:
        props["eo:cloud_cover"] = cloud
    geom = box(lon, 0, lon + 1, 1)
    return {"type": "Feature", "id": iid, "collection": collection, "geometry": geom.__geo_interface__,
            "bbox": list(geom.bounds), "properties": props, "assets": {}, "links": []}


HAND = [
    _item("west", -179.5, "2024-01-01T00:00:00Z", 5),
    _item("east", 178.5, "2024-02-01T00:00:00.500Z", 50),
    _item("mid", 10, "2024-03-01T00:00:00Z"),
    _item("other", 10, "2024-04-01T00:00:00Z", 15, collection="c2"),
]


def _search(**body) -> list[str]:
    from tessera_ray.synthetic.services import Catalogue, SearchParams

    return [it["id"] for it in Catalogue({}, tuple(HAND)).search(SearchParams.from_body(body | {"limit": 50}))[0]]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"bbox": [179, 0.2, -179, 0.3]}, ["west", "east"]),  # across the antimeridian
        ({"bbox": [9, 0, 10.5, 1]}, ["mid", "other"]),
        ({"bbox": [9, 0, 0, 10.5, 1, 10]}, ["mid", "other"]),  # 3-D bbox
        ({"datetime": "2024-02-01T00:00:00.5Z"}, ["east"]),
        ({"datetime": "2024-02-01T00:00:01Z/.."}, ["mid", "other"]),
        ({"datetime": "/2024-01-31T23:59:59Z"}, ["west"]),
        ({"query": {"eo:cloud_cover": {"gte": 5, "lt": 50}}}, ["west", "other"]),
        ({"query": {"eo:cloud_cover": {"in": [50]}}}, ["east"]),
        ({"query": {"eo:cloud_cover": {"neq": 5}}}, ["east", "other"]),  # items without the property never match
        ({"filter": {"op": "between", "args": [{"property": "eo:cloud_cover"}, 5, 15]}}, ["west", "other"]),
        ({"filter": {"op": "isNull", "args": [{"property": "eo:cloud_cover"}]}}, ["mid"]),
        ({"filter": {"op": "not", "args": [{"op": "<", "args": [{"property": "eo:cloud_cover"}, 10]}]}},
         ["east", "other"]),
        ({"filter": {"op": "or", "args": [{"op": "=", "args": [{"property": "id"}, "mid"]},
                                           {"op": "in", "args": [{"property": "collection"}, ["c2"]]}]}},
         ["mid", "other"]),
        ({"filter": {"op": "or", "args": [{"op": "<", "args": [{"property": "eo:cloud_cover"}, 10]},
                                           {"op": "=", "args": [{"property": "id"}, "mid"]}]}},
         ["west", "mid"]),  # unknown or true is true
        ({"filter": {"op": "and", "args": [{"op": "<", "args": [{"property": "eo:cloud_cover"}, 99]},
                                            {"op": "<>", "args": [{"property": "id"}, "west"]}]}},
         ["east", "other"]),  # unknown and true is unknown
        ({"filter": {"op": ">", "args": [{"property": "datetime"}, {"timestamp": "2024-02-15T00:00:00Z"}]}},
         ["mid", "other"]),
        ({"filter": {"op": "s_intersects", "args": [{"property": "geometry"},
                                                     {"type": "Point", "coordinates": [179, 0.5]}]}}, ["east"]),
        ({"collections": ["c2"], "ids": ["other", "mid"]}, ["other"]),
    ],
)
def test_search_semantics(body, expected):
    assert _search(**body) == expected
