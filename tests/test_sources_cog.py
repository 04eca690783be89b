"""COG reads onto unit grids, on COGs written here: window, 20 m -> 10 m, warped, corrupt, over HTTP with a token,
and which failures skip an asset (bad bytes, gone) and which fail the read (the source did not deliver)."""

import logging
import pickle
from datetime import UTC

import numpy as np
import pyproj
import pytest
from cog_helpers import RecordingServer, utm_transform, write_cog

from tessera_ray.errors import DataError, ServiceError
from tessera_ray.faults import Fault
from tessera_ray.grid import Window, zone_grid
from tessera_ray.serve import StaticServer
from tessera_ray.sources.cog import (
    GDAL_DEFAULTS,
    AssetUnavailable,
    ReaderEnv,
    Secret,
    TargetGrid,
    UnreadableAsset,
    capture_env,
    earthdata_token,
    is_transient,
    read_onto,
)

ROW, COL = 442_080, 40_960  # a pixel of zone 31's grid near x=500 km, y=5000 km


def _target(window, zone=31):
    g = zone_grid(zone)
    return TargetGrid(window.shape, g.window_transform(window), g.crs)


def _origin(row, col, zone=31):
    g = zone_grid(zone)
    x, y = g.pixel_to_xy(row, col)
    return float(x) - 5.0, float(y) + 5.0  # upper-left corner of that pixel


FAST = ReaderEnv(retries=1, retry_delay=0.0)
HTTP = ReaderEnv(gdal=GDAL_DEFAULTS + (("GDAL_HTTP_MAX_RETRY", "0"), ("GDAL_HTTP_TIMEOUT", "1")), retries=1,
                 retry_delay=0.0)
"""Our retries only (GDAL's own would absorb a few failures), a 1 s timeout."""


def test_same_grid_is_a_plain_window_read_with_nodata_outside(tmp_path):
    rng = np.random.default_rng(0)
    src = rng.integers(1, 5000, (64, 64)).astype(np.uint16)
    x0, y0 = _origin(ROW, COL)
    path = write_cog(tmp_path / "b.tif", src, "EPSG:32631", utm_transform(x0, y0, 10), nodata=0, blocksize=32)
    inside = Window(ROW + 3, COL + 5, 20, 30)
    got = read_onto(str(path), _target(inside), env=FAST).data
    np.testing.assert_array_equal(got, src[3:23, 5:35])
    edge = Window(ROW + 50, COL - 4, 20, 10)  # hangs off the bottom and the left
    got = read_onto(str(path), _target(edge), env=FAST).data
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got[:14, 4:], src[50:64, 0:6])
    assert not got[14:].any() and not got[:, :4].any()


def test_20m_band_nearest_onto_10m_grid_at_odd_offsets(tmp_path):
    rng = np.random.default_rng(1)
    src = rng.integers(1, 5000, (40, 40)).astype(np.uint16)
    x0, y0 = _origin(ROW - 10, COL - 10)  # 20 m pixel edges on even 10 m rows/cols from here
    path = write_cog(tmp_path / "b20.tif", src, "EPSG:32631", utm_transform(x0, y0, 20), nodata=0, blocksize=16)
    window = Window(ROW + 7, COL + 3, 21, 17)
    got = read_onto(str(path), _target(window), "nearest", env=FAST).data
    up = np.repeat(np.repeat(src, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(got, up[17:38, 13:30])


def test_bilinear_option_keeps_a_constant_field(tmp_path):
    src = np.full((40, 40), 1234, np.uint16)
    x0, y0 = _origin(ROW - 10, COL - 10)
    path = write_cog(tmp_path / "c.tif", src, "EPSG:32631", utm_transform(x0, y0, 20), nodata=0)
    got = read_onto(str(path), _target(Window(ROW + 7, COL + 3, 21, 17)), "bilinear", env=FAST).data
    assert (got == 1234).all()


def test_other_crs_is_warped_onto_the_unit_grid(tmp_path):
    # a tile of zone 32 read onto zone 31's grid near the zone edge (6 E)
    g31 = zone_grid(31)
    row, col = g31.lonlat_to_pixel(5.98, 50.0)
    window = Window(int(row) - 20, int(col) - 20, 40, 40)
    target = _target(window)
    to32 = pyproj.Transformer.from_crs("EPSG:32631", "EPSG:32632", always_xy=True)
    x, y = to32.transform(*g31.pixel_to_xy(window.row + 20, window.col + 20))
    x0, y0 = round(x / 10) * 10 - 400, round(y / 10) * 10 + 400
    rng = np.random.default_rng(2)
    src = np.repeat(np.repeat(rng.integers(1, 5000, (8, 8)), 10, 0), 10, 1).astype(np.uint16)  # 100 m cells
    path = write_cog(tmp_path / "z32.tif", src, "EPSG:32632", utm_transform(x0, y0, 10), nodata=0)
    got = read_onto(str(path), target, "nearest", env=FAST).data
    rows, cols = np.mgrid[window.row : window.row + 40, window.col : window.col + 40]
    xs, ys = to32.transform(*g31.pixel_to_xy(rows, cols))
    r = np.floor((y0 - ys) / 10).astype(int)
    c = np.floor((xs - x0) / 10).astype(int)
    ok = (r >= 0) & (r < 80) & (c >= 0) & (c < 80)
    expected = np.where(ok, src[np.clip(r, 0, 79), np.clip(c, 0, 79)], 0)
    assert (got == expected).mean() > 0.98  # only pixels on a 100 m cell edge may differ


def test_truncated_cog_is_unreadable_after_retries(tmp_path):
    src = np.random.default_rng(3).integers(1, 5000, (256, 256)).astype(np.uint16)
    path = write_cog(
        tmp_path / "t.tif", src, "EPSG:32631", utm_transform(*_origin(ROW, COL), 10), nodata=0, blocksize=64
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableAsset, match="t.tif"):
        read_onto(str(path), _target(Window(ROW + 200, COL + 200, 50, 50)), env=FAST)
    path.write_bytes(b"not a tiff at all")
    with pytest.raises(UnreadableAsset):
        read_onto(str(path), _target(Window(ROW, COL, 4, 4)), env=FAST)


def test_orbit_tag_comes_back_with_the_read(tmp_path):
    src = np.full((30, 30), 0.05, np.float32)
    path = write_cog(tmp_path / "vv.tif", src, "EPSG:32631", utm_transform(*_origin(ROW, COL), 30), nodata=np.nan,
                     tags={"ORBIT_PASS_DIRECTION": "ASCENDING"})
    got = read_onto(str(path), _target(Window(ROW + 3, COL + 3, 9, 9)), "bilinear", env=FAST)
    assert got.tags["ORBIT_PASS_DIRECTION"] == "ASCENDING"
    np.testing.assert_allclose(got.data, 0.05, rtol=1e-6)


def test_token_from_env_or_file_never_shown(tmp_path, caplog):
    assert earthdata_token({}) is None
    assert earthdata_token({"EARTHDATA_TOKEN": " abc123 "}).reveal() == "abc123"
    (tmp_path / "tok").write_text("file-token-987\n")
    env = capture_env({"EARTHDATA_TOKEN_FILE": str(tmp_path / "tok"), "GDAL_CACHEMAX": "64"})
    assert env.token.reveal() == "file-token-987"
    assert dict(env.gdal)["GDAL_CACHEMAX"] == "64"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("tessera_ray").info("env %s %r", env, env)
    for text in (repr(env), str(env), f"{env.token}", caplog.text):
        assert "file-token-987" not in text
    assert pickle.loads(pickle.dumps(env)).token == Secret("file-token-987")


def test_bearer_header_only_for_earthdata_hosts(tmp_path):
    src = np.full((20, 20), 0.1, np.float32)
    write_cog(tmp_path / "vv.tif", src, "EPSG:32631", utm_transform(*_origin(ROW, COL), 30), nodata=np.nan)
    target = _target(Window(ROW, COL, 30, 30))
    with RecordingServer(tmp_path) as server:
        href = f"{server.url}/vv.tif"
        with_host = ReaderEnv(token=Secret("tok-s1"), earthdata_hosts=("127.0.0.1",), retries=0)
        read_onto(href, target, "bilinear", with_host, auth=False)  # an S2 read: no header
        assert server.seen and all("Authorization" not in r["headers"] for r in server.seen)
        server.seen.clear()
        other_host = ReaderEnv(token=Secret("tok-s1"), earthdata_hosts=(".asf.alaska.edu",), retries=0)
        read_onto(href + "?x=1", target, "bilinear", other_host, auth=True)
        assert server.seen and all("Authorization" not in r["headers"] for r in server.seen)
        server.seen.clear()
        read_onto(href + "?x=2", target, "bilinear", with_host, auth=True)
        assert server.seen and all(r["headers"].get("Authorization") == "Bearer tok-s1" for r in server.seen)
        (tmp_path / "junk.tif").write_bytes(b"<html>not a tiff</html>" * 20)  # fetched whole before it is judged
        for n, (env, sent) in enumerate(((with_host, "Bearer tok-s1"), (other_host, None))):
            server.seen.clear()
            with pytest.raises(UnreadableAsset, match="the whole object"):
                read_onto(f"{server.url}/junk.tif?x={n}", target, "bilinear", env, auth=True)
            whole = [r for r in server.seen if "Range" not in r["headers"]]
            assert whole and all(r["headers"].get("Authorization") == sent for r in whole)


# ------------------------------------------------------------------ failures over HTTP


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder of 256 px COGs (64 px tiles): ``a.tif`` ... ``h.tif``, a truncated and a non-TIFF one."""
    root = tmp_path_factory.mktemp("site")
    src = np.random.default_rng(4).integers(1, 5000, (256, 256)).astype(np.uint16)
    for name in "abcdefgh":
        path = write_cog(root / f"{name}.tif", src, "EPSG:32631", utm_transform(*_origin(ROW, COL), 10), nodata=0,
                         blocksize=64)
    data = path.read_bytes()
    (root / "truncated.tif").write_bytes(data[: len(data) // 2])
    (root / "junk.tif").write_bytes(b"<html>not a tiff</html>" * 20)
    return root


@pytest.fixture
def server(site):
    """A fresh server per test: new URLs, so nothing comes from GDAL's cache of an earlier test."""
    with StaticServer(site) as srv:
        yield srv


FAR = _target(Window(ROW + 200, COL + 200, 40, 40))
"""A window in the COG's last tiles, which GDAL's first request (the header) does not bring."""


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408, 401, 403])
def test_source_failure_fails_the_read_and_is_not_a_bad_asset(server, status):
    with server.failing(None, status, "/a.tif"):
        with pytest.raises(AssetUnavailable) as caught:
            read_onto(f"{server.url}/a.tif?X-Amz-Signature=SECRET", FAR, env=HTTP)
    assert isinstance(caught.value, ServiceError) and not isinstance(caught.value, DataError)
    message = str(caught.value)
    assert f"{server.url}/a.tif" in message and f"HTTP response code: {status}" in message
    assert "SECRET" not in message and "2 attempt(s)" in message
    assert server.faults.answered >= 2  # the retry went back to the server


def test_retry_after_a_failure_goes_back_to_the_server(server, site):
    """GDAL's /vsicurl/ remembers a failed request for the life of the process: the retry must bypass that,
    and leave nothing behind that fails the next read of the same file (Ray retries a task in the same worker)."""
    expected = read_onto(str(site / "b.tif"), FAR, env=FAST).data
    with server.failing(1, 502, "/b.tif"):
        got = read_onto(f"{server.url}/b.tif", FAR, env=HTTP).data
    np.testing.assert_array_equal(got, expected)
    assert server.faults.answered == 1
    once = ReaderEnv(gdal=HTTP.gdal, retries=0)  # no retry within a read: only what read_onto remembers helps
    for failing, name in ((HTTP, "c.tif"), (once, "g.tif")):
        with server.failing(None, 503, f"/{name}"):
            with pytest.raises(AssetUnavailable):
                read_onto(f"{server.url}/{name}", FAR, env=failing)
        for _ in range(2):  # the first read after the outage, and the one after it (cached again)
            np.testing.assert_array_equal(read_onto(f"{server.url}/{name}", FAR, env=once).data, expected)


def test_range_failing_after_the_header_was_read_fails_the_read(server):
    """The header is cached, then the tile requests fail: libtiff says "got 0 bytes", as for a truncated file;
    the retry, with the cache bypassed, meets the failing server and tells the two apart."""
    read_onto(f"{server.url}/d.tif", _target(Window(ROW, COL, 8, 8)), env=HTTP)
    with server.failing(None, 502, "/d.tif"):
        with pytest.raises(AssetUnavailable, match="502"):
            read_onto(f"{server.url}/d.tif", FAR, env=HTTP)


def test_network_failures_fail_the_read(server):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AssetUnavailable, match="CURL error"):
        read_onto(f"http://127.0.0.1:{port}/e.tif", FAR, env=HTTP)
    server.latency_s = 1.5  # past GDAL_HTTP_TIMEOUT=1
    with pytest.raises(AssetUnavailable, match="timed out"):
        read_onto(f"{server.url}/e.tif", FAR, env=ReaderEnv(gdal=HTTP.gdal, retries=0))


@pytest.mark.parametrize("name, status, says", [
    ("truncated.tif", None, "got"),
    ("junk.tif", None, "not recognized"),
    ("missing.tif", None, "404"),
    ("f.tif", 410, "410"),
])
def test_bad_or_gone_asset_is_unreadable(server, name, status, says):
    """The bytes do not decode, or the server says the object is not there: skip the scene (a DataError)."""
    if status:
        server.fail_next(None, status, f"/{name}")
    with pytest.raises(UnreadableAsset, match=says) as caught:
        read_onto(f"{server.url}/{name}?sig=SECRET", FAR, env=HTTP)
    assert isinstance(caught.value, DataError) and "SECRET" not in str(caught.value)


@pytest.mark.parametrize("causes, transient", [
    ([("CPLE_AWSObjectNotFoundError", "The specified key does not exist")], False),
    ([("CPLE_AWSAccessDeniedError", "Access Denied")], True),
    ([("CPLE_AWSInvalidCredentialsError", "The AWS Access Key Id you provided does not exist")], True),
    ([("CPLE_AWSError", "SlowDown: Please reduce your request rate")], True),
    ([("CPLE_OutOfMemoryError", "Cannot allocate 1048576 bytes")], True),
    ([("CPLE_AppDefinedError", "TIFFReadEncodedTile() failed."), ("CPLE_AppDefinedError", "ZIPDecode: Decoding error")],
     False),
])
def test_s3_and_memory_errors_are_classified_by_gdal_class(causes, transient):
    """The S3 and memory classes we cannot provoke on loopback (moto accepts any key), built as rasterio chains them."""
    import rasterio._err
    from rasterio.errors import RasterioIOError

    exc = RasterioIOError("Read failed. See previous exception for details.")
    inner = exc
    for name, message in causes:
        cause = getattr(rasterio._err, name)(1, 1, message)
        inner.__cause__ = cause
        inner = cause
    assert is_transient(exc) is transient


def test_a_machine_running_short_is_transient_for_local_files():
    """GDAL words a local open failure without an errno: the strerror text is what is left."""
    from rasterio.errors import RasterioIOError

    assert is_transient(RasterioIOError("/data/b04.tif: Too many open files"))
    assert is_transient(OSError(24, "Too many open files"))
    assert not is_transient(RasterioIOError("/data/b04.tif: No such file or directory"))


# ------------------------------------------------------------------ faults GDAL does not report (tessera_ray.faults)


@pytest.mark.parametrize("fault", [
    Fault.status(502, requests="data"), Fault.html(requests="data"), Fault.short(requests="data"),
], ids=["502", "html", "short"])
def test_data_reads_failing_for_good_never_make_the_asset_unreadable(server, site, fault):
    """A server that fails every tile request while it answers header requests: GDAL hides the status behind
    libtiff's "got 0 bytes", as for a truncated file. The object fetched whole (no Range) is read instead."""
    expected = read_onto(str(site / "a.tif"), FAR, env=FAST).data
    with server.inject(fault) as faults:
        got = read_onto(f"{server.url}/a.tif", FAR, env=HTTP).data
    np.testing.assert_array_equal(got, expected)
    assert faults.answered >= 2  # both of GDAL's tries met the fault


@pytest.mark.parametrize("fault, says", [
    (Fault.html(), "an HTML page (200) instead of the object"),
    (Fault.short(), "a body shorter than its Content-Length"),
], ids=["html", "short"])
def test_faults_on_every_request_fail_the_read_instead_of_skipping_the_scene(server, fault, says):
    with server.inject(fault):
        with pytest.raises(AssetUnavailable) as caught:
            read_onto(f"{server.url}/a.tif?sig=SECRET", FAR, env=HTTP)
    assert says in str(caught.value) and f"{server.url}/a.tif" in str(caught.value)
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize("fault", [
    Fault.status(429, retry_after=1, count=1), Fault.slow(1.5, count=1), Fault.html(count=1), Fault.short(count=1),
    Fault.status(503, requests="data", count=1), Fault.html(requests="data", count=1),
], ids=["429", "slow", "html", "short", "data-503", "data-html"])
def test_a_passing_fault_of_any_kind_reads_the_same_values(server, site, fault):
    expected = read_onto(str(site / "b.tif"), FAR, env=FAST).data
    with server.inject(fault) as faults:
        got = read_onto(f"{server.url}/b.tif", FAR, env=HTTP).data
    np.testing.assert_array_equal(got, expected)
    assert faults.answered == 1


def test_an_asset_whose_whole_bytes_do_not_decode_is_fetched_once_per_process(server, monkeypatch):
    from tessera_ray.store.objects import HttpObjects

    downloads = []
    get = HttpObjects.get
    monkeypatch.setattr(HttpObjects, "get", lambda self, key: downloads.append(key) or get(self, key))
    for _ in range(2):
        with pytest.raises(UnreadableAsset, match="the whole object"):
            read_onto(f"{server.url}/truncated.tif", FAR, env=HTTP)
    assert downloads == ["truncated.tif"]


# --------------------------------------------------------------------------- the reader protocol in a Ray worker

DRIVER = {"AWS_ACCESS_KEY_ID": "AKIDDRIVER", "AWS_SECRET_ACCESS_KEY": "driver-s3cr3t",
          "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "CPL_VSIL_CURL_CHUNK_SIZE": "65536"}


class _EnvCheckingReader:
    """A second :class:`~tessera_ray.sources.reader.SceneReader`: clear constant pixels, read only when the
    driver's credentials and endpoint are in the worker's environment (where GDAL and boto3 look for them)."""

    def capture_env(self):
        return capture_env(DRIVER)

    def restore_env(self, env):
        from tessera_ray.sources.reader import COG

        return COG.restore_env(env)

    def read(self, href, target, resampling, env, auth):
        import os

        from tessera_ray.sources.cog import BandRead

        seen = {key: os.environ.get(key) for key in DRIVER}
        if seen != DRIVER:
            raise AssetUnavailable(f"{href}: the worker reads with {sorted(k for k in DRIVER if seen[k] != DRIVER[k])}"
                                   " not as the driver set them")
        return BandRead(np.full(target.shape, 4, np.uint16))  # SCL 4: vegetation, a clear pixel


def _read_in_worker(config, scenes):
    import os

    from tessera_ray.sources.read import Block, read_cube

    before = {key: os.environ.get(key) for key in DRIVER}
    cube = read_cube(Block(31, Window(ROW, COL, 8, 8)), scenes, config)
    return cube.bands.shape, before, {key: os.environ.get(key) for key in DRIVER}


def test_the_drivers_reader_settings_are_restored_in_a_ray_worker_and_only_for_its_task(ray_cluster):
    import sys
    from datetime import datetime

    import ray
    from ray import cloudpickle

    from tessera_ray.sources.read import ReadConfig
    from tessera_ray.sources.reader import SceneReader
    from tessera_ray.sources.scenes import EARTH_SEARCH_C1, S2, Asset, Scene

    reader = _EnvCheckingReader()
    assert isinstance(reader, SceneReader)
    env = reader.capture_env()
    assert "driver-s3cr3t" not in repr(env) and "AKIDDRIVER" not in repr(env)
    scene = Scene("S2_env", "sentinel-2-c1-l2a", S2, datetime(2024, 5, 1, tzinfo=UTC), "EPSG:32631",
                  (-180.0, -90.0, 180.0, 90.0), tuple(Asset(role, f"mem://{role}") for role in EARTH_SEARCH_C1.roles))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        shape, before, after = ray.get(ray.remote(_read_in_worker).remote(ReadConfig(env=env, reader=reader), [scene]))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert shape == (1, 8, 8, 10)  # one clear date, read by the worker with the driver's settings
    assert before != DRIVER and after == before  # the worker's own environment is back after the task


@pytest.mark.parametrize("name, value", [("TESSERA_RAY_READ_RETRIES", "three"),
                                         ("TESSERA_RAY_READ_RETRY_DELAY", "-1")])
@pytest.mark.parametrize("command", ["ingest", "embed"])
def test_a_bad_read_setting_is_one_line_before_any_request(tmp_path, capsys, monkeypatch, name, value, command):
    import socket

    from cli_helpers import run_cli

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"  # a request would be refused: exit 3
    monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    argv = ["--roi", "3.0,52.0,3.001,52.001", "--year", "2024", "--stac", nowhere, "--out", str(out)]
    argv = ["ingest", *argv] if command == "ingest" else ["embed", *argv, "--checkpoint", f"{nowhere}/tiny.pt"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and name in err, err
    assert not out.exists()
