"""The static HTTP server: what range readers, browsers and benchmarks rely on."""

from __future__ import annotations

import email.utils
import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tessera_ray.serve import StaticServer

PAYLOAD = np.random.default_rng(7).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("site")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (root / "data.bin").write_bytes(PAYLOAD)
    (root / "item.json").write_text('{"type": "Feature"}')
    (root / "part.parquet").write_bytes(b"PAR1....PAR1")
    (root / "img.tif").write_bytes(b"II*\x00")
    (root / "index.html").write_text("<html>hi</html>")
    chunk = root / "emb.zarr" / "embeddings" / "c" / "0" / "0" / "0"
    chunk.parent.mkdir(parents=True)
    chunk.write_bytes(b"\x01\x02")
    (root / "emb.zarr" / "zarr.json").write_text("{}")
    (base / "secret.txt").write_text("TOP SECRET")
    os.symlink(base / "secret.txt", root / "sub" / "link.txt")
    return root


@pytest.fixture(scope="module")
def server(site):
    with StaticServer(site) as srv:
        yield srv


def raw(server, method, path, headers=None):
    """One request with the path sent exactly as given (no client normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_get_whole_file(server):
    r = requests.get(f"{server.url}/data.bin")
    assert r.status_code == 200
    assert r.content == PAYLOAD
    assert r.headers["Accept-Ranges"] == "bytes"
    assert int(r.headers["Content-Length"]) == len(PAYLOAD)


@pytest.mark.parametrize(
    ("spec", "start", "stop"),
    [
        ("bytes=10-19", 10, 20),
        ("bytes=-100", 9_900, 10_000),
        ("bytes=9990-", 9_990, 10_000),
        ("bytes=9990-20000", 9_990, 10_000),
    ],
)
def test_range(server, spec, start, stop):
    r = requests.get(f"{server.url}/data.bin", headers={"Range": spec})
    assert r.status_code == 206
    assert r.content == PAYLOAD[start:stop]
    assert r.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(PAYLOAD)}"
    assert int(r.headers["Content-Length"]) == stop - start


@pytest.mark.parametrize("spec", ["bytes=10000-", "bytes=20000-20010", "bytes=-0"])
def test_unsatisfiable_range(server, spec):
    r = requests.get(f"{server.url}/data.bin", headers={"Range": spec})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(PAYLOAD)}"


@pytest.mark.parametrize("spec", [
    "bytes=5-2",  # last-pos before first-pos: an invalid int-range (RFC 9110 14.1.1)
    "bytes=0-1,9-3",  # one invalid range makes the whole set invalid
    "items=0-1",  # a range unit the server does not know
    "garbage", "bytes=", "bytes=-", "bytes=,", "bytes=a-b", "bytes=1-2-3", "bytes=0x10-0x20", "bytes=--5",
])
def test_invalid_range_header_is_ignored_and_the_whole_object_sent(server, spec):
    """RFC 9110 14.2: a server ignores a Range it cannot parse or whose unit it does not know,
    as nginx and S3 do (Starlette alone answers 400)."""
    for method in ("GET", "HEAD"):
        r = requests.request(method, f"{server.url}/data.bin", headers={"Range": spec})
        assert r.status_code == 200, (method, spec, r.status_code)
        assert "Content-Range" not in r.headers
        assert int(r.headers["Content-Length"]) == len(PAYLOAD)
        assert r.content == (PAYLOAD if method == "GET" else b"")


def test_valid_range_set_serves_its_satisfiable_ranges(server):
    """Ranges that start past the end are left out when another one is satisfiable (RFC 9110 14.1.1)."""
    r = requests.get(f"{server.url}/data.bin", headers={"Range": "bytes=0-9,20000-20010"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 0-9/{len(PAYLOAD)}"
    assert r.content == PAYLOAD[:10]
    r = requests.get(f"{server.url}/data.bin", headers={"Range": "bytes=20000-20010,-0"})  # none is: 416
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(PAYLOAD)}"


def test_multi_range_is_multipart(server):
    r = requests.get(f"{server.url}/data.bin", headers={"Range": "bytes=0-9,5000-5009"})
    assert r.status_code == 206
    ctype = r.headers["Content-Type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=")[1].encode()
    parts = [p for p in r.content.split(b"--" + boundary) if p.strip() not in (b"", b"--")]
    bodies = {}
    for part in parts:
        head, body = part.split(b"\r\n\r\n", 1)
        content_range = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-range")][0]
        bodies[content_range.split(b" ")[-1].decode()] = body.removesuffix(b"\r\n")
    assert bodies == {"0-9/10000": PAYLOAD[0:10], "5000-5009/10000": PAYLOAD[5000:5010]}


def test_head(server):
    status, headers, body = raw(server, "HEAD", "/data.bin")
    assert status == 200
    assert body == b""
    assert int(headers["content-length"]) == len(PAYLOAD)
    assert headers["accept-ranges"] == "bytes"


def test_etag_and_conditional_get(server, site):
    r = requests.get(f"{server.url}/data.bin")
    etag = r.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = requests.get(f"{server.url}/data.bin", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    other = requests.get(f"{server.url}/data.bin", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.content == PAYLOAD


def test_last_modified(server, site):
    r = requests.get(f"{server.url}/data.bin")
    served = email.utils.parsedate_to_datetime(r.headers["Last-Modified"]).timestamp()
    assert served == int((site / "data.bin").stat().st_mtime)
    again = requests.get(f"{server.url}/data.bin", headers={"If-Modified-Since": r.headers["Last-Modified"]})
    assert again.status_code == 304


def test_cors_on_get(server):
    r = requests.get(f"{server.url}/data.bin", headers={"Origin": "http://example.test", "Range": "bytes=0-3"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"content-range", "etag", "accept-ranges", "content-length"} <= exposed


def test_cors_preflight_allows_range(server):
    r = requests.options(
        f"{server.url}/data.bin",
        headers={
            "Origin": "http://example.test",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
        },
    )
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in r.headers["Access-Control-Allow-Methods"]
    assert "range" in r.headers["Access-Control-Allow-Headers"].lower()


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/item.json", "application/json"),
        ("/part.parquet", "application/vnd.apache.parquet"),
        ("/img.tif", "image/tiff"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/emb.zarr/embeddings/c/0/0/0", "application/octet-stream"),
        ("/emb.zarr/zarr.json", "application/json"),
    ],
)
def test_content_types(server, path, ctype):
    r = requests.get(server.url + path)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == ctype


def test_root_serves_index_html(server):
    r = requests.get(server.url + "/")
    assert r.status_code == 200 and r.text == "<html>hi</html>"


@pytest.mark.parametrize(
    "path",
    ["/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt",
     "/..%2fsecret.txt", "/sub/link.txt"],
)
def test_paths_outside_the_folder_are_refused(server, path):
    status, _, body = raw(server, "GET", path)
    assert status == 404
    assert b"SECRET" not in body


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH"])
def test_read_only(server, site, method):
    r = requests.request(method, f"{server.url}/data.bin", data=b"overwritten")
    assert r.status_code == 405
    assert (site / "data.bin").read_bytes() == PAYLOAD
    r = requests.request(method, f"{server.url}/new.bin", data=b"x")
    assert r.status_code == 405
    assert not (site / "new.bin").exists()


def test_missing_file_is_404(server):
    assert requests.get(f"{server.url}/nope.bin").status_code == 404


def test_stats_count_requests_and_body_bytes(server):
    server.stats.reset()
    requests.get(f"{server.url}/data.bin", headers={"Range": "bytes=0-99"})
    requests.get(f"{server.url}/data.bin", headers={"Range": "bytes=-50"})
    requests.head(f"{server.url}/item.json")
    snap = server.stats.snapshot()
    assert snap["requests"] == 3
    assert snap["gets"] == 2
    assert snap["bytes_sent"] == 150
    assert snap["paths"] == {"/data.bin": 2, "/item.json": 1}
    server.stats.reset()
    assert server.stats.snapshot() == {"requests": 0, "gets": 0, "bytes_sent": 0, "paths": {}}


def test_latency_is_injected_and_settable(server):
    server.latency_s = 0.3
    try:
        t0 = time.perf_counter()
        requests.get(f"{server.url}/item.json")
        slow = time.perf_counter() - t0
    finally:
        server.latency_s = 0.0
    t0 = time.perf_counter()
    requests.get(f"{server.url}/item.json")
    fast = time.perf_counter() - t0
    assert slow >= 0.3
    assert fast < 0.3


def test_failures_are_injected_per_path_for_the_next_requests(server):
    before = server.faults.answered
    with server.failing(2, 502, "/data.bin"):
        statuses = [requests.get(f"{server.url}/data.bin").status_code for _ in range(3)]
        assert requests.get(f"{server.url}/item.json").status_code == 200  # other paths are served
    assert statuses == [502, 502, 200]
    assert server.faults.answered - before == 2


def test_failures_until_cleared_and_by_prefix(server):
    with server.failing(None, 429, "/emb.zarr/"):
        for _ in range(3):
            r = requests.get(f"{server.url}/emb.zarr/zarr.json")
            assert r.status_code == 429 and r.headers["Retry-After"] == "0" and "injected" in r.text
        assert requests.head(f"{server.url}/emb.zarr/embeddings/c/0/0/0").status_code == 429
        assert requests.get(f"{server.url}/data.bin", headers={"Range": "bytes=0-9"}).content == PAYLOAD[:10]
    assert requests.get(f"{server.url}/emb.zarr/zarr.json").status_code == 200  # cleared on leaving the block


def test_failure_count_must_be_positive(server):
    from tessera_ray.errors import UserInputError

    with pytest.raises(UserInputError, match="count"):
        server.fail_next(0)


def test_injected_faults_of_each_kind_as_a_client_sees_them(server):
    """The test kit's faults (tessera_ray.faults): what each one looks like on the wire."""
    from tessera_ray.faults import Fault

    url = f"{server.url}/data.bin"
    before = dict(server.faults.by_kind)
    with server.inject(Fault.status(429, retry_after=7, count=1)) as faults:
        r = requests.get(url)
        assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        assert requests.get(url).content == PAYLOAD  # count spent
    with server.inject(Fault.html(count=1)):
        r = requests.get(url, headers={"Range": "bytes=100-199"})
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html") and b"<html>" in r.content
    with server.inject(Fault.short(count=1)):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/data.bin", headers={"Range": "bytes=1000-4999"})
        resp = conn.getresponse()
        assert resp.status == 206 and resp.getheader("Content-Length") == "4000"
        with pytest.raises(http.client.IncompleteRead) as cut:
            resp.read()
        assert cut.value.partial == PAYLOAD[1000:3000]  # half the body, then the connection closed
        conn.close()
    with server.inject(Fault.slow(0.5, count=1)):
        t0 = time.perf_counter()
        assert requests.get(url).content == PAYLOAD and time.perf_counter() - t0 >= 0.5
        with pytest.raises(requests.Timeout):
            server.faults.add(Fault.slow(1.0, count=1))
            requests.get(url, timeout=0.3)
    assert {k: v - before.get(k, 0) for k, v in faults.by_kind.items() if v > before.get(k, 0)} == {
        "status 429": 1, "html": 1, "short": 1, "slow": 2}


def test_injected_faults_hit_data_or_header_reads_a_share_at_a_time(server):
    from tessera_ray.faults import Fault

    url = f"{server.url}/data.bin"
    with server.inject(Fault.status(503, requests="data", path="/data.bin")):
        assert requests.get(url, headers={"Range": "bytes=0-15"}).content == PAYLOAD[:16]  # a header read
        assert requests.get(url).content == PAYLOAD
        for rng in ("bytes=16-31", "bytes=-16"):
            assert requests.get(url, headers={"Range": rng}).status_code == 503
        assert requests.get(f"{server.url}/item.json", headers={"Range": "bytes=5-9"}).status_code == 206
    with server.inject(Fault.status(502, requests="header")):
        assert requests.get(url, headers={"Range": "bytes=0-15"}).status_code == 502
        assert requests.get(url, headers={"Range": "bytes=16-31"}).content == PAYLOAD[16:32]

    def draws(seed):
        with server.inject(Fault.status(500, rate=0.3), seed=seed):
            return [requests.get(url).status_code for _ in range(60)]

    first = draws(1)
    assert first == draws(1) != draws(2)  # the share is drawn from a seeded generator
    assert 8 <= first.count(500) <= 30


@pytest.mark.parametrize("bad, says", [
    (dict(kind="slowish"), "unknown fault kind"), (dict(kind="status", code=200), "4xx or 5xx"),
    (dict(kind="html", rate=0.0), "rate"), (dict(kind="html", requests="tiles"), "requests"),
    (dict(kind="html", count=0), "count"),
])
def test_a_fault_that_cannot_be_is_refused(bad, says):
    from tessera_ray.errors import UserInputError
    from tessera_ray.faults import Fault

    with pytest.raises(UserInputError, match=says):
        Fault(**bad)


def test_two_servers_get_distinct_free_ports(site):
    with StaticServer(site) as a, StaticServer(site) as b:
        assert a.port != b.port
        assert requests.get(f"{b.url}/item.json").json() == {"type": "Feature"}


def test_missing_root_is_a_user_error(tmp_path):
    from tessera_ray.errors import UserInputError

    with pytest.raises(UserInputError, match="not a folder"):
        StaticServer(tmp_path / "absent")


def test_busy_port_is_a_clear_error(server, site):
    from tessera_ray.errors import ServiceError

    with pytest.raises(ServiceError, match="cannot listen"):
        StaticServer(site, port=server.port).start()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_command_prints_url_and_stops_on_signal(site, stop):
    proc = subprocess.Popen(
        [str(BIN / "tessera-ray"), "serve", str(site), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split()[0].rstrip("/")
        assert requests.get(f"{url}/item.json").json() == {"type": "Feature"}
        proc.send_signal(stop)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    assert proc.stderr.read() == ""


def test_serve_command_missing_folder(tmp_path):
    proc = subprocess.run(
        [str(BIN / "tessera-ray"), "serve", str(tmp_path / "absent")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "no such folder" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def cog(site):
    """A tiled COG (64 px blocks, two overviews) inside the served folder."""
    import rasterio
    from affine import Affine

    data = np.random.default_rng(3).integers(1, 3000, (256, 256), dtype=np.uint16)
    path = site / "cog.tif"
    with rasterio.open(
        path, "w", driver="COG", width=256, height=256, count=1, dtype="uint16", crs="EPSG:32631",
        transform=Affine(10, 0, 300000, 0, -10, 5800000), nodata=0, blocksize=64, compress="DEFLATE",
        overview_count=2,
    ) as dst:
        dst.write(data, 1)
    return path, data


def test_multi_range_header_names_are_canonical(server, cog):
    """GDAL matches ``Content-Type: multipart/byteranges`` byte for byte."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /cog.tif HTTP/1.1\r\nHost: t\r\nRange: bytes=0-3,100-103\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert b"\r\nContent-Type: multipart/byteranges; boundary=" in data.split(b"\r\n\r\n")[0]


@pytest.mark.parametrize("multirange", ["PARALLEL", "SINGLE_GET"])
def test_gdal_reads_a_cog_window_by_ranges(server, cog, multirange):
    """rasterio over /vsicurl/ reads what is on disk, fetching only the blocks it needs.

    With ``GDAL_HTTP_MULTIRANGE=SINGLE_GET`` GDAL asks for the four
    non-adjacent blocks of a column in one multi-range GET.
    """
    import rasterio
    from rasterio.windows import Window

    path, data = cog
    window = Window(0, 0, 64, 256)  # one column of blocks: not contiguous in the file
    url = f"/vsicurl/{server.url}/cog.tif?mode={multirange}"  # a distinct URL: no GDAL cache
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_MULTIRANGE=multirange):
        with rasterio.open(url) as src:
            server.stats.reset()
            got = src.read(1, window=window)
            reads = server.stats.snapshot()
    np.testing.assert_array_equal(got, data[:, :64])
    assert reads["bytes_sent"] < path.stat().st_size / 2
    if multirange == "SINGLE_GET":
        assert reads["gets"] == 1
    else:
        assert reads["gets"] >= 2
