"""Transient read failures never change what gets published.

The test world is read over loopback HTTP from a :class:`StaticServer` that
answers 502 for one Sentinel-2 SCL asset (read for every block its scene
touches). Two 32 px units far apart: only the first lies under that scene's
tile, so the second is a witness that the rest of the job goes on. The
catalog is the world's own, cut to January and February (70 of its 428
scenes) to keep each run a few seconds.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date
from urllib.parse import urlparse

import pytest
from cli_helpers import run_cli
from embed_helpers import EPOCH, embed_args, store_files, write_checkpoint

from tessera_ray.grid import Unit
from tessera_ray.pipeline.blocks import READ_RETRIES

HIT, WITNESS = "utm31_32_11363_0664", "utm31_32_11363_0667"
"""West unit: under tiles 31UCU only. East unit: under 31UDU only."""
ROI = {"type": "MultiPolygon", "coordinates": [
    [[[0.1195, 52.1750], [0.1196, 52.1750], [0.1196, 52.1751], [0.1195, 52.1751], [0.1195, 52.1750]]],
    [[[0.1315, 52.1750], [0.1316, 52.1750], [0.1316, 52.1751], [0.1315, 52.1751], [0.1315, 52.1750]]],
]}
QUICK = {"TESSERA_RAY_READ_RETRIES": "1", "TESSERA_RAY_READ_RETRY_DELAY": "0", "GDAL_HTTP_MAX_RETRY": "0"}
"""Two tries per asset read, no waiting, no GDAL-level retries: the faults reach our retry logic."""


@pytest.fixture(scope="module")
def servers():
    """Every server of this module, open until its end: no two get the same port, so no two share URLs."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture
def served(world, servers):
    """The world over HTTP on a server of the test's own: its faults and counters are the test's, and its
    URLs are new to GDAL's cache in the session's Ray workers, so every asset is fetched again."""
    from tessera_ray.serve import StaticServer

    return servers.enter_context(StaticServer(world))


@pytest.fixture(scope="module")
def winter(world, tmp_path_factory):
    """A folder whose ``stac/items.parquet`` holds the world's scenes of January and February."""
    from datetime import datetime

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(world / "stac" / "items.parquet")
    march = pa.scalar(datetime(2024, 3, 1, tzinfo=UTC))
    base = tmp_path_factory.mktemp("winter")
    (base / "stac").mkdir()
    pq.write_table(table.filter(pc.less(table["datetime"], march)), base / "stac" / "items.parquet")
    return base


@pytest.fixture(scope="module")
def embed(winter, tmp_path_factory):
    """``embed(out, url)``: the ``tessera-ray embed`` arguments for both units, read over HTTP from ``url``."""
    base = tmp_path_factory.mktemp("transient")
    checkpoint = write_checkpoint(base / "tiny.pt")
    roi = base / "roi.geojson"
    roi.write_text(json.dumps(ROI))
    return lambda out, url: embed_args(winter, out, checkpoint, str(roi), "--block-size", "32", "--catalog-root", url)


def _quick(mp: pytest.MonkeyPatch) -> None:
    for key, value in {**QUICK, "SOURCE_DATE_EPOCH": EPOCH}.items():
        mp.setenv(key, value)


@pytest.fixture(scope="module")
def victim(victim_scene):
    """URL path of the SCL of a 31UCU scene: read for the west unit, never for the east one."""
    return urlparse(victim_scene.asset("scl").href).path


@pytest.fixture(scope="module")
def victim_scene(winter):
    """A 31UCU scene: read for the west unit, never for the east one."""
    from tessera_ray.sources.catalog import search_catalog
    from tessera_ray.sources.read import Block
    from tessera_ray.sources.scenes import profile_for_collection

    bounds = Block.of(Unit.from_id(HIT)).lonlat_bounds()
    scenes = search_catalog(str(winter / "stac" / "items.parquet"), profile_for_collection("sentinel-2-c1-l2a", "s2"),
                            bounds, date(2024, 1, 1), date(2024, 12, 31), root="http://host")
    witness_west = Block.of(Unit.from_id(WITNESS)).lonlat_bounds()[0]
    return next(s for s in scenes if s.bbox[2] < witness_west)


@pytest.fixture(scope="module")
def reference(world, servers, embed, tmp_path_factory, ray_cluster):
    """Every file of an undisturbed run's store."""
    from tessera_ray.cli import main
    from tessera_ray.serve import StaticServer

    out = tmp_path_factory.mktemp("reference") / "root"
    server = servers.enter_context(StaticServer(world))
    with pytest.MonkeyPatch.context() as mp:
        _quick(mp)
        try:
            main(embed(out, server.url))
        except SystemExit as exc:
            pytest.fail(f"the reference run exited {exc.code}")
    files = store_files(out)
    assert any(k.startswith("tessera.zarr/utm31/embeddings/c/") for k in files)
    return files


@pytest.mark.slow
def test_asset_failing_a_few_times_gives_the_undisturbed_store(embed, served, victim, reference, tmp_path, capsys,
                                                               monkeypatch):
    """Three 502s outlast one read's two tries: the read task fails, Ray runs it again, it succeeds."""
    _quick(monkeypatch)
    out = tmp_path / "root"
    served.stats.reset()
    before = served.faults.answered
    with served.failing(3, 502, victim):
        code, stdout, err = run_cli(embed(out, served.url), capsys)
    assert code == 0, err
    assert served.faults.answered - before == 3 and served.stats.paths[victim] > 3  # then the asset was read
    assert "units: 2 done, 0 skipped (already published), 0 failed of 2" in stdout
    assert "unreadable scene" not in stdout
    assert store_files(out) == reference


@pytest.mark.slow
def test_asset_that_keeps_failing_fails_its_unit_until_a_rerun(embed, served, victim, reference, tmp_path, capsys,
                                                               monkeypatch):
    """An outage fails only the unit that needs the asset (exit 5); the re-run publishes the undisturbed bytes."""
    from tessera_ray.store import read_manifest

    _quick(monkeypatch)
    out = tmp_path / "root"
    with served.failing(None, 502, victim):
        code, stdout, err = run_cli(embed(out, served.url), capsys)
    assert code == 5, err
    assert served.faults.answered >= 2 * (READ_RETRIES + 1)  # two tries per read, in every try of the task
    assert "units: 1 done, 0 skipped (already published), 1 failed of 2" in stdout
    failure = next(line for line in stdout.splitlines() if line.startswith(f"failed 2024 {HIT}:"))
    assert "AssetUnavailable" in failure and f"{served.url}{victim}" in failure and "502" in failure, failure
    assert "unreadable scene" not in stdout  # nothing was left out of a published unit
    assert list(read_manifest(str(out), 2024)["unit_id"]) == [WITNESS]
    record = json.loads(next((out / "manifests" / "runs").glob("2024-*.json")).read_text())
    assert list(record["failed"]) == [HIT] and record["unreadable_scenes"] == []

    code, stdout, err = run_cli(embed(out, served.url), capsys)
    assert code == 0, err
    assert "units: 1 done, 1 skipped (already published), 0 failed of 2" in stdout
    assert store_files(out) == reference


def test_ingest_stops_on_an_outage_and_writes_no_partial_unit(winter, served, victim, tmp_path, capsys, monkeypatch,
                                                             ray_cluster):
    """``tessera-ray ingest``: one line, exit 3 (a service failed), no folder for the unit."""
    _quick(monkeypatch)
    out = tmp_path / "npy"
    args = ["ingest", "--roi", "0.1195,52.1750,0.1196,52.1751", "--year", "2024", "--out", str(out),
            "--catalog", str(winter / "stac" / "items.parquet"), "--catalog-root", served.url,
            "--unit-size", "32", "--block-size", "32"]
    with served.failing(None, 503, victim):
        code, _, err = run_cli(args, capsys)
    assert code == 3, err
    assert served.faults.answered >= 2 * (READ_RETRIES + 1)  # Ray tried the block task again
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"unit {HIT} not written" in lines[0] and "503" in lines[0], err
    assert not (out / HIT).exists()


@pytest.mark.slow
def test_every_kind_of_fault_gives_the_undisturbed_store(embed, served, world, victim_scene, reference, tmp_path,
                                                         capsys, monkeypatch):
    """A few of each fault kind among the COG reads, and one asset whose tile requests fail for good while its
    header requests are answered (GDAL reports that as a truncated file): nothing is left out, same bytes."""
    from tessera_ray.faults import Fault

    _quick(monkeypatch)
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
    out = tmp_path / "root"
    nir = urlparse(victim_scene.asset("nir").href).path
    assert (world / nir.lstrip("/")).stat().st_size > 16384  # more than GDAL's first (header) request brings
    faults = (Fault.status(502, requests="data", path=nir),
              Fault.status(503, rate=0.02, count=3), Fault.status(429, retry_after=1, rate=0.02, count=2),
              Fault.slow(1.5, rate=0.02, count=2), Fault.html(rate=0.02, count=3), Fault.short(rate=0.02, count=3))
    with served.inject(*faults, seed=0) as injected:
        code, stdout, err = run_cli(embed(out, served.url), capsys)
    assert code == 0, err
    assert set(injected.by_kind) == {"status 502", "status 503", "status 429", "slow", "html", "short"}, (
        injected.by_kind
    )
    assert "units: 2 done, 0 skipped (already published), 0 failed of 2" in stdout
    assert "unreadable scene" not in stdout
    assert store_files(out) == reference


@pytest.mark.slow
def test_ingest_through_faults_writes_the_undisturbed_stacks(winter, world, servers, victim_scene, tmp_path, capsys,
                                                            monkeypatch, ray_cluster):
    """``tessera-ray ingest`` reads through the same COG reader: the same npy files with faults as without."""
    from tessera_ray.faults import Fault
    from tessera_ray.serve import StaticServer

    _quick(monkeypatch)
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
    nir = urlparse(victim_scene.asset("nir").href).path

    def ingest(url, out):
        args = ["ingest", "--roi", "0.1195,52.1750,0.1196,52.1751", "--year", "2024", "--out", str(out),
                "--catalog", str(winter / "stac" / "items.parquet"), "--catalog-root", url,
                "--unit-size", "32", "--block-size", "32"]
        code, _, err = run_cli(args, capsys)
        assert code == 0, err
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    clean = ingest(servers.enter_context(StaticServer(world)).url, tmp_path / "clean")
    faulty = servers.enter_context(StaticServer(world))
    faults = (Fault.status(502, requests="data", path=nir), Fault.status(503, rate=0.03, count=2),
              Fault.status(429, retry_after=1, rate=0.03, count=1), Fault.slow(1.5, rate=0.03, count=1),
              Fault.html(rate=0.03, count=2), Fault.short(rate=0.03, count=2))
    with faulty.inject(*faults, seed=1) as injected:
        got = ingest(faulty.url, tmp_path / "faulty")
    assert set(injected.by_kind) == {"status 502", "status 503", "status 429", "slow", "html", "short"}, (
        injected.by_kind
    )
    assert any(k.endswith("bands.npy") for k in clean)
    assert got == clean


@pytest.mark.slow
def test_a_job_whose_encoder_does_not_come_back_fails_the_rest_and_a_rerun_publishes_it(
        embed, served, reference, tmp_path, capsys, monkeypatch):
    """The pool gives up on its actors (lost with their node, none took them over) when the first block is handed
    to it: every unit fails with that reason, nothing is published, exit 5, no hang; the re-run publishes the
    undisturbed bytes."""
    from tessera_ray.pipeline.encode import EncoderPool, EncoderUnavailable

    _quick(monkeypatch)
    out = tmp_path / "root"

    def unavailable(pool, pixels):
        raise EncoderUnavailable("encoder actor 0 has not answered for 600 s (TESSERA_RAY_ENCODER_WAIT_S)")

    with monkeypatch.context() as patch:
        patch.setattr(EncoderPool, "submit", unavailable)
        code, stdout, err = run_cli(embed(out, served.url), capsys)
    assert code == 5, err
    assert "units: 0 done, 0 skipped (already published), 2 failed of 2" in stdout
    for unit in (HIT, WITNESS):
        assert f"failed 2024 {unit}: EncoderUnavailable: encoder actor 0 has not answered for 600 s" in stdout

    code, stdout, err = run_cli(embed(out, served.url), capsys)
    assert code == 0, err
    assert "units: 2 done, 0 skipped (already published), 0 failed of 2" in stdout
    assert store_files(out) == reference
