"""STAC search: API with retries, splitting and caching; stac-geoparquet snapshots."""

import socket
import time
from datetime import UTC, date, datetime

import pytest
from stac_helpers import FakeStacApi, s2_item, year_of_items

from tessera_ray.errors import ServiceError, UserInputError
from tessera_ray.sources.catalog import catalog_root, search_catalog
from tessera_ray.sources.scenes import EARTH_SEARCH_C1, EARTH_SEARCH_L2A, resolve_href, scene_from_item
from tessera_ray.sources.stac import RetryPolicy, SearchCache, SearchQuery, search_scenes

FAST = RetryPolicy(retries=4, backoff=0.01, page_size=7)
BBOX = (4.05, 50.05, 4.1, 50.1)


def test_search_pages_through_all_items():
    items = year_of_items(40) + year_of_items(5, year=2023, start_id=100)
    with FakeStacApi(items) as api:
        scenes = search_scenes(EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31), url=api.url, policy=FAST)
    assert [s.id for s in scenes] == [f"S2_{i:04d}" for i in range(40)]
    assert api.requests >= 40 // 7 + 1
    first = scenes[0]
    assert first.crs == "EPSG:32631" and first.boa_offset == 1000 and first.cloud_cover == 10.0
    assert first.asset("red").href == f"{api.url}/cogs/S2_0000/red.tif"  # relative: against the API root


def test_search_retries_through_injected_502s():
    with FakeStacApi(year_of_items(10), fail_first=3) as api:
        scenes = search_scenes(EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31), url=api.url, policy=FAST)
    assert len(scenes) == 10
    assert api.requests > 3


def test_failing_wide_pages_split_the_date_range():
    with FakeStacApi(year_of_items(30), max_days=100) as api:
        scenes = search_scenes(EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31), url=api.url,
                               policy=RetryPolicy(retries=1, backoff=0.0, page_size=50))
    assert len({s.id for s in scenes}) == 30


def test_unreachable_api_is_one_service_error_after_retries():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match="unreachable after 2 retries"):
        search_scenes(EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31), url=f"http://127.0.0.1:{port}",
                      policy=RetryPolicy(retries=2, backoff=0.01))
    assert time.monotonic() - t0 < 10


def test_api_that_keeps_answering_502_is_a_service_error():
    with FakeStacApi(year_of_items(3), fail_first=10**6) as api:
        with pytest.raises(ServiceError):
            search_scenes(EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 1, 5), url=api.url,
                          policy=RetryPolicy(retries=1, backoff=0.0))


def test_results_are_cached_in_memory_and_on_disk(tmp_path):
    with FakeStacApi(year_of_items(12)) as api:
        cache = SearchCache(tmp_path / "cache")
        a = search_scenes(EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31), url=api.url, policy=FAST,
                          cache=cache)
        n = api.requests
        b = search_scenes(EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31), url=api.url, policy=FAST,
                          cache=cache)
        assert api.requests == n and a == b
        c = search_scenes(EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31), url=api.url, policy=FAST,
                          cache=SearchCache(tmp_path / "cache"))
        assert api.requests == n and c == a
        search_scenes(EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 6, 30), url=api.url, policy=FAST,
                      cache=cache)
        assert api.requests > n


def test_a_cache_write_that_fails_leaves_no_partial_file(tmp_path, monkeypatch):
    import os

    cache = SearchCache(tmp_path / "cache")
    query = SearchQuery("http://h:9", "sentinel-2-c1-l2a", BBOX, date(2024, 1, 1), date(2024, 12, 31))

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        cache.put(query, year_of_items(2))
    assert list((tmp_path / "cache").iterdir()) == []  # neither a result nor a temporary left behind
    assert SearchCache(tmp_path / "cache").get(query) is None


def test_offset_decision_from_items():
    t = datetime(2022, 3, 1, tzinfo=UTC)
    old = scene_from_item(s2_item("a", t, baseline="03.01"), EARTH_SEARCH_C1, "/w")
    new = scene_from_item(s2_item("b", t, baseline="04.00"), EARTH_SEARCH_C1, "/w")
    applied = s2_item("c", t, baseline="04.00", collection="sentinel-2-l2a")
    applied["properties"]["earthsearch:boa_offset_applied"] = True
    assert (old.boa_offset, new.boa_offset) == (0, 1000)
    assert scene_from_item(applied, EARTH_SEARCH_L2A, "/w").boa_offset == 0


@pytest.mark.parametrize("baseline", ["03.01", "04.00", "05.11"])
@pytest.mark.parametrize("flag", ["right", "absent", "wrong"])
def test_offset_is_decided_by_baseline_and_collection_never_by_the_flag(baseline, flag):
    """Both Earth Search collections on both sides of 04.00, the old collection's flag present
    and right, absent, and wrong: the DNs to remove follow the baseline and collection alone."""
    t = datetime(2023, 6, 1, tzinfo=UTC)
    new_scale = baseline >= "04.00"
    for profile, native in ((EARTH_SEARCH_C1, True), (EARTH_SEARCH_L2A, False)):
        item = s2_item("x", t, baseline=baseline, collection=profile.collection)
        if flag != "absent":
            item["properties"]["earthsearch:boa_offset_applied"] = new_scale if flag == "right" else not new_scale
        scene = scene_from_item(item, profile, "/w")
        # c1 keeps ESA's native DNs (+1000 from 04.00); the old collection harmonised them itself
        assert scene.boa_offset == (1000 if native and new_scale else 0), (profile.name, baseline, flag)
        assert scene.offset_flag_disagrees == (not native and flag == "wrong"), (profile.name, baseline, flag)


def test_item_without_a_needed_asset_is_left_out():
    item = s2_item("a", datetime(2024, 5, 1, tzinfo=UTC))
    del item["assets"]["scl"]
    assert scene_from_item(item, EARTH_SEARCH_C1, "/w") is None


def test_href_resolution_rule():
    assert resolve_href("cogs/a/red.tif", "http://h:1/world") == "http://h:1/world/cogs/a/red.tif"
    assert resolve_href("cogs/a/red.tif", "/data/world") == "/data/world/cogs/a/red.tif"
    assert resolve_href("https://x/y.tif", "/data") == "https://x/y.tif"
    assert catalog_root("/data/world/stac/items.parquet") == "/data/world"
    assert catalog_root("/data/snap/items.parquet") == "/data/snap"
    assert catalog_root("http://h:1/world/stac/items.parquet") == "http://h:1/world"


def _write_snapshot(path, items):
    import stac_geoparquet.arrow as sga

    path.parent.mkdir(parents=True, exist_ok=True)
    sga.to_parquet(sga.parse_stac_items_to_arrow(items), path)


def test_geoparquet_snapshot_filters_and_resolves_hrefs(tmp_path):
    items = (
        year_of_items(20)
        + year_of_items(4, year=2023, start_id=50)
        + year_of_items(3, start_id=70, bbox=(10.0, 40.0, 10.2, 40.2))
        + year_of_items(2, start_id=80, collection="other")
    )
    snap = tmp_path / "world" / "stac" / "items.parquet"
    _write_snapshot(snap, items)
    scenes = search_catalog(str(snap), EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31))
    assert [s.id for s in scenes] == [f"S2_{i:04d}" for i in range(20)]
    assert scenes[0].asset("scl").href == f"{tmp_path}/world/cogs/S2_0000/scl.tif"
    half = search_catalog(str(snap), EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 6, 30))
    assert 8 <= len(half) <= 11
    other_root = search_catalog(str(snap), EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 1, 31),
                                root="http://h:9")
    assert other_root[0].asset("red").href == "http://h:9/cogs/S2_0000/red.tif"


def test_remote_snapshot_is_read_with_ranges_over_http_and_s3(tmp_path, s3_server, monkeypatch):
    """A snapshot on a static host or in a bucket gives the scenes the local file gives, reading only the
    footer and the row groups the filter keeps; a missing one is one clear error."""
    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq
    import stac_geoparquet.arrow as sga

    from tessera_ray.errors import UserInputError
    from tessera_ray.serve import StaticServer

    items = year_of_items(20) + year_of_items(1500, year=2022, start_id=100)
    snap = tmp_path / "world" / "stac" / "items.parquet"
    snap.parent.mkdir(parents=True)
    table = pa.Table.from_batches(sga.parse_stac_items_to_arrow(items))
    pq.write_table(table.sort_by("datetime"), snap, row_group_size=100)  # 2022's row groups are skipped
    local = search_catalog(str(snap), EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31),
                           root="http://h:9")
    assert len(local) == 20
    with StaticServer(tmp_path) as server:
        url = f"{server.url}/world/stac/items.parquet"
        over_http = search_catalog(url, EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31), root="http://h:9")
        assert [s.id for s in over_http] == [s.id for s in local]
        assert over_http[0].asset("red").href == local[0].asset("red").href
        assert 0 < server.stats.bytes_sent < snap.stat().st_size
        with pytest.raises(UserInputError, match="cannot read STAC catalog .*absent.parquet"):
            search_catalog(f"{server.url}/absent.parquet", EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31))
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    boto3.client("s3").create_bucket(Bucket="catalogs")
    boto3.client("s3").put_object(Bucket="catalogs", Key="snap/items.parquet", Body=snap.read_bytes())
    in_s3 = search_catalog("s3://catalogs/snap/items.parquet", EARTH_SEARCH_C1, BBOX, date(2024, 1, 1),
                           date(2024, 12, 31), root="http://h:9")
    assert [s.id for s in in_s3] == [s.id for s in local]


def test_signing_hook_runs_for_snapshot_items_as_for_api_items(tmp_path, monkeypatch):
    """Planetary Computer hrefs are signed whatever found the item: a STAC API or a stac-geoparquet snapshot."""
    import dataclasses
    import sys
    import types

    signed = []

    def sign(href):
        signed.append(href)
        return href + "?sig=sas"

    monkeypatch.setitem(sys.modules, "planetary_computer", types.SimpleNamespace(sign=sign))
    profile = dataclasses.replace(EARTH_SEARCH_C1, signing="planetary-computer")
    items = year_of_items(3)
    snap = tmp_path / "world" / "stac" / "items.parquet"
    _write_snapshot(snap, items)
    from_snapshot = search_catalog(str(snap), profile, BBOX, date(2024, 1, 1), date(2024, 12, 31))
    with FakeStacApi(items) as api:
        from_api = search_scenes(profile, BBOX, date(2024, 1, 1), date(2024, 12, 31), url=api.url, policy=FAST)
    for scenes in (from_snapshot, from_api):
        assert len(scenes) == 3
        assert all(a.href.endswith(".tif?sig=sas") for s in scenes for a in s.assets)
    assert len(signed) == 2 * 3 * len(profile.roles)
    unsigned = search_catalog(str(snap), EARTH_SEARCH_C1, BBOX, date(2024, 1, 1), date(2024, 12, 31))
    assert not any("?" in a.href for s in unsigned for a in s.assets)
    with pytest.raises(UserInputError, match="signing 'nobody'"):
        search_catalog(str(snap), dataclasses.replace(profile, signing="nobody"), BBOX, date(2024, 1, 1),
                       date(2024, 12, 31))


@pytest.mark.parametrize("name, value", [("TESSERA_RAY_STAC_RETRIES", "many"), ("TESSERA_RAY_STAC_PAGE_SIZE", "0"),
                                         ("TESSERA_RAY_STAC_BACKOFF", "-0.5")])
def test_a_bad_stac_setting_is_one_line_before_any_request(tmp_path, capsys, monkeypatch, name, value):
    import socket

    from cli_helpers import run_cli

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"  # a request would be refused: exit 3
    monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    code, _, err = run_cli(["ingest", "--roi", "3.0,52.0,3.001,52.001", "--year", "2024", "--stac", nowhere,
                            "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and name in err, err
    assert not out.exists()
