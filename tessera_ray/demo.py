"""``tessera-ray demo``: the whole system on the synthetic world, by the production code path.

DIR becomes a published root (``DIR/tessera.zarr``, ``DIR/manifests/``); the
demo's working material stays beside it in DIR (``DIR/world/`` the synthetic
world with ``labels.parquet``, ``DIR/model/`` the trained small encoder), so a
second run reuses the world, the model and every published unit.

Steps: world -> encoder (trained by :func:`tessera_ray.train.ensure_demo_encoder`)
-> local services (HTTP of the world, STAC API, S3) -> a local Ray -> the embed
job reading through the STAC API and HTTP COGs -> publication -> the root served
over HTTP -> the labelled points sampled back through the client -> a report.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEMO_UNIT = 128
"""Unit (shard) size of the demo: several units over the ROI, each a few seconds of work."""
DEMO_BLOCK = 128
ROI_FRACTION = 0.4
"""The demo embeds the central part of the world: this fraction of its width and height."""


@dataclass(frozen=True)
class DemoReport:
    root: Path
    url: str
    roi: str
    units_done: int
    units_skipped: int
    pixels: int
    px_per_s: float
    seconds: dict
    """Wall time of each step."""
    points: int
    points_valid: int
    accuracy: float | None
    """Nearest-class-centroid accuracy of the sampled embeddings (held-out half of the points)."""
    year: int
    http_requests: int = 0
    http_bytes: int = 0
    """What the world's HTTP server (the COGs) sent to the job."""


def central_roi(bbox, fraction: float = ROI_FRACTION) -> str:
    west, south, east, north = bbox
    dx, dy = (east - west) * (1 - fraction) / 2, (north - south) * (1 - fraction) / 2
    return f"{west + dx:.5f},{south + dy:.5f},{east - dx:.5f},{north - dy:.5f}"


def centroid_accuracy(embeddings: np.ndarray, classes: np.ndarray) -> float | None:
    """Fit class centroids on even-indexed points, score the odd ones: does the map separate land cover?"""
    train, test = np.arange(len(classes)) % 2 == 0, np.arange(len(classes)) % 2 == 1
    labels = np.unique(classes[train])
    if len(labels) < 2 or not test.any():
        return None
    centroids = np.stack([embeddings[train & (classes == c)].mean(axis=0) for c in labels])
    distances = ((embeddings[test][:, None, :] - centroids[None]) ** 2).sum(axis=2)
    return float((labels[distances.argmin(axis=1)] == classes[test]).mean())


def prefix_depths(checkpoint: Path) -> tuple[int, ...] | None:
    """The Matryoshka prefixes (16, 32, 64) the demo publishes when its encoder has them."""
    from tessera_ray.model import matryoshka_depths, output_dims, read_checkpoint

    config = read_checkpoint(checkpoint).config
    return tuple(k for k in matryoshka_depths(config) if k < output_dims(config)) or None


def sample_labels(url: str, world_dir: Path, roi: str, year: int):
    """The world's labelled points inside the ROI, read back over HTTP through our client."""
    import geopandas as gpd
    from shapely.geometry import box

    from tessera_ray.client import VALID, open_root

    labels = gpd.read_parquet(world_dir / "labels.parquet")
    west, south, east, north = (float(v) for v in roi.split(","))
    inside = labels[labels.geometry.within(box(west, south, east, north))]
    lons, lats = inside.geometry.x.to_numpy(), inside.geometry.y.to_numpy()
    with open_root(url) as root:
        embeddings, status = root.points(lons, lats, year)
    valid = status == VALID
    classes = inside["class_id"].to_numpy()[valid]
    values = embeddings[valid].astype(np.float32)
    return len(inside), int(valid.sum()), centroid_accuracy(values, classes)


def run_demo(out: Path, log: Callable[[str], None], serve: Callable | None = None, port: int = 0) -> DemoReport:
    """Build (or reuse) everything under ``out`` and publish the demo root; ``serve(server)`` runs while served."""
    from tessera_ray.errors import UserInputError
    from tessera_ray.pipeline.embed import check_complete, run_embed
    from tessera_ray.pipeline.plan import EmbedConfig
    from tessera_ray.serve import StaticServer
    from tessera_ray.synthetic import World, generate_world
    from tessera_ray.synthetic.services import LocalServices
    from tessera_ray.synthetic.world import FORMAT_VERSION
    from tessera_ray.train import ensure_demo_encoder
    from tessera_ray.viewer import publish_viewer

    warnings.filterwarnings("ignore", message="Dataset has no geotransform")  # training reads the world's cube
    out = Path(out).absolute()
    world_dir, model_dir = out / "world", out / "model"
    seconds: dict[str, float] = {}

    start = time.monotonic()
    if not (world_dir / "world.json").is_file():
        log(f"building the synthetic world in {world_dir} ...")
        generate_world(world_dir, preset="demo")
    world = World.open(world_dir)
    if world.format != FORMAT_VERSION:
        raise UserInputError(f"{out} was built by an older tessera-ray (world format {world.format}, now "
                             f"{FORMAT_VERSION}); remove it or pass another --out")
    seconds["world"] = time.monotonic() - start

    start = time.monotonic()
    log(f"training the small encoder in {model_dir} (reused when already there) ...")
    checkpoint = ensure_demo_encoder(world_dir, model_dir)
    seconds["model"] = time.monotonic() - start

    roi = central_roi(world.bbox)
    start = time.monotonic()
    log("starting local services (world over HTTP, STAC API, S3) and a local Ray; embedding ...")
    with LocalServices(world_dir) as services:
        config = EmbedConfig(
            roi=roi, years=(world.year,), out=str(out), checkpoint=str(checkpoint),
            stac=services.urls()["stac"], unit_size=DEMO_UNIT, block_size=DEMO_BLOCK, max_in_flight=2,
            depths=prefix_depths(checkpoint),
        )
        result = run_embed(config)
        stats = services.http.stats
    check_complete(result)
    publish_viewer(str(out))  # embed wrote it if it published; a re-run that reused every unit did not
    seconds["embed"] = time.monotonic() - start
    totals = result.totals()

    start = time.monotonic()
    with StaticServer(out, port=port) as server:
        points, valid, accuracy = sample_labels(server.url, world_dir, roi, world.year)
        seconds["sample"] = time.monotonic() - start
        report = DemoReport(out, server.url, roi, totals["done"], totals["skipped"], totals["pixels"],
                            totals["px_per_s"], seconds, points, valid, accuracy, world.year,
                            stats.requests, stats.bytes_sent)
        if serve is not None:
            serve(report)
    return report


def format_report(r: DemoReport, serving: bool) -> str:
    """The report printed at the end: what was made, where, and how to read it."""
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in r.seconds.items())
    acc = "n/a" if r.accuracy is None else f"{r.accuracy:.0%}"
    where = r.url if serving else f"{r.url} (stopped; serve it again with: tessera-ray serve {r.root})"
    page = "index.html?labels=world/labels.parquet"
    viewer = f"{r.url}/{page}" if serving else f"tessera-ray serve {r.root}, then http://127.0.0.1:8000/{page}"
    lon, lat = (float(v) for v in r.roi.split(",")[:2])
    return f"""
tessera-ray demo: done
  root        {r.root}  (tessera.zarr/ + manifests/{r.year}.parquet)
  units       {r.units_done} embedded, {r.units_skipped} reused from an earlier run
  speed       {r.pixels:,} px at {r.px_per_s:,.0f} px/s
  inputs      {r.http_requests:,} HTTP requests, {r.http_bytes / 1e6:,.1f} MB of COGs through the STAC API's hrefs
  time        {steps}
  labels      {r.points_valid} of {r.points} labelled points read back over HTTP; land-cover classes
              from the embeddings (nearest centroid, held-out half): {acc}
  served at   {where}
  viewer      {viewer}
              (in a browser: explore, label, classify, export; docs/viewer.md)

Read it with our client (Python):
  from tessera_ray.client import open_root
  root = open_root("{r.url}")
  print(root.pixel({lon + 0.003:.4f}, {lat + 0.003:.4f}, {r.year}))      # 128-d embedding, dequantised
  print(root.pixel({lon + 0.003:.4f}, {lat + 0.003:.4f}, {r.year}, depth=16))   # its Matryoshka 16-d prefix

With geotessera (0.11, its Zarr reader over HTTP):
  from geotessera import GeoTesseraZarr
  from obstore.store import HTTPStore
  from zarr.storage import ObjectStore
  http = HTTPStore.from_url("{r.url}/tessera.zarr", client_options={{"allow_http": True}})
  gz = GeoTesseraZarr(ObjectStore(http, read_only=True))
  print(gz.sample_points([({lon + 0.003:.4f}, {lat + 0.003:.4f})], {r.year}))
  print(gz.sample_points([({lon + 0.003:.4f}, {lat + 0.003:.4f})], {r.year}, depth=16))

With DuckDB (the manifest is GeoParquet; a local path here, or an http(s) URL with httpfs):
  duckdb -c "select unit_id, valid_pixels, bbox from read_parquet('{r.root}/manifests/{r.year}.parquet')"

Command line:
  tessera-ray sample --help
"""
