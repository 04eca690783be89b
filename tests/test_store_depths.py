"""Matryoshka stores: prefix arrays ``embeddings_d{K}`` beside ``embeddings`` (TESSERA.md 5b), written and published."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tessera_ray.errors import UserInputError
from tessera_ray.grid import Unit
from tessera_ray.store import EmbeddingStore, StoreLayout, publish, read_manifest
from tessera_ray.store.layout import ZARR_DIR, shard_key
from tessera_ray.store.testing import build_random_store, random_block

UNITS = [Unit(31, 4000, 160, 256), Unit(31, 4000, 161, 256), Unit(32, 4000, 170, 256)]
DEPTHS = (4, 16, 32, 64)

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


def open_zarr(root: Path):
    import zarr
    from zarr.storage import LocalStore

    return zarr.open_group(LocalStore(root / ZARR_DIR, read_only=True), mode="r", use_consolidated=True)


@pytest.fixture(scope="module", params=["none", "zstd"], ids=["fixed-offsets", "zstd"])
def depth_store(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"depths-{request.param}")
    blocks = build_random_store(str(root), UNITS, depths=DEPTHS, compression=request.param)
    return root, blocks


def test_depth_chunk_sides_follow_the_byte_budget():
    upstream = StoreLayout()  # 4096-px shards of 32-px chunks
    assert {k: upstream.depth_chunk_size(k) for k in (4, 16, 32, 64)} == {4: 128, 16: 64, 32: 64, 64: 32}
    assert StoreLayout(256, 32).depth_chunk_size(1) == 256  # never wider than the shard
    assert StoreLayout(32, 32).depth_chunk_size(4) == 32
    with pytest.raises(ValueError, match="depths must be 1..127"):
        StoreLayout(depths=(16, 128))


def test_prefix_arrays_have_their_own_band_dims_and_chunks(depth_store):
    root, _ = depth_store
    g = open_zarr(root)
    assert g.attrs["geoemb:depths"] == [
        {"dimensions": 4, "array": "embeddings_d4"}, {"dimensions": 16, "array": "embeddings_d16"},
        {"dimensions": 32, "array": "embeddings_d32"}, {"dimensions": 64, "array": "embeddings_d64"},
        {"dimensions": 128, "array": "embeddings"},
    ]
    zone = g["utm31"]
    full = zone["embeddings"]
    for k, side in {4: 128, 16: 64, 32: 64, 64: 32}.items():
        arr = zone[f"embeddings_d{k}"]
        assert arr.dtype == np.int8 and arr.fill_value == 0
        assert arr.shape == (1, k, *full.shape[2:])
        assert arr.shards == (1, k, 256, 256) and arr.chunks == (1, k, side, side)
        assert arr.metadata.dimension_names == ("time", f"band_d{k}", "y", "x")
        assert list(zone[f"band_d{k}"][:]) == list(range(k))
        assert arr.attrs.get("tessera_ray:fixed_offsets") == full.attrs.get("tessera_ray:fixed_offsets")
    doc = json.loads((root / ZARR_DIR / "zarr.json").read_text())
    listed = set(doc["consolidated_metadata"]["metadata"])
    assert {f"utm{z}/embeddings_d{k}" for z in (31, 32) for k in DEPTHS} <= listed
    assert {f"utm{z}/band_d{k}" for z in (31, 32) for k in DEPTHS} <= listed


def test_prefix_codes_are_the_first_k_codes_of_embeddings(depth_store):
    root, blocks = depth_store
    g = open_zarr(root)
    for block in blocks:
        zone = g[f"utm{block.unit.zone:02d}"]
        rows, cols = block.unit.window.slices()
        full = zone["embeddings"][0, :, rows, cols]
        r, c = block.offset
        h, w = block.scales.shape
        np.testing.assert_array_equal(full[:, r : r + h, c : c + w], np.moveaxis(block.embeddings, -1, 0))
        for k in DEPTHS:
            prefix = zone[f"embeddings_d{k}"][0, :, rows, cols]
            assert prefix.tobytes() == full[:k].tobytes()


def test_xarray_opens_a_zone_group_with_every_depth(depth_store):
    import xarray as xr
    from zarr.storage import LocalStore

    root, _ = depth_store
    ds = xr.open_zarr(LocalStore(root / ZARR_DIR, read_only=True), group="utm31", zarr_format=3, consolidated=True)
    assert ds["embeddings_d16"].dims == ("time", "band_d16", "y", "x")
    assert ds.sizes["band_d16"] == 16 and ds.sizes["band"] == 128


def test_manifest_records_every_prefix_shard(depth_store):
    root, blocks = depth_store
    frame = read_manifest(str(root), 2024).set_index("unit_id")
    for block in blocks:
        u = block.unit
        objects = {o["key"]: o for o in frame.loc[u.id].objects}
        arrays = ("embeddings", "scales", *(f"embeddings_d{k}" for k in DEPTHS))
        expected = {shard_key(u.zone, a, 0, u.row, u.col) for a in arrays}
        assert set(objects) == expected
        for key, o in objects.items():
            data = (root / key).read_bytes()
            assert len(data) == o["size"] and hashlib.sha256(data).hexdigest() == o["sha256"]


def test_a_unit_whose_prefix_shard_is_lost_is_not_published(tmp_path):
    root = tmp_path / "r"
    build_random_store(str(root), UNITS[:2], depths=(16,))
    victim = root / shard_key(31, "embeddings_d16", 0, UNITS[1].row, UNITS[1].col)
    victim.unlink()
    result = publish(str(root), 2024, reverify=True)  # published units are checked again only when asked
    assert result.rejected == (UNITS[1].id,)
    assert list(read_manifest(str(root), 2024).unit_id) == [UNITS[0].id]


def test_killed_before_the_prefix_shard_publishes_nothing_of_the_unit(tmp_path, monkeypatch):
    from tessera_ray.store.objects import LocalObjects

    root = tmp_path / "r"
    build_random_store(str(root), UNITS[:1], depths=(16, 32))
    store = EmbeddingStore.open(str(root))
    real = LocalObjects.put

    def put(self, key, data):
        if "/embeddings_d32/" in key:
            raise RuntimeError("killed")
        return real(self, key, data)

    monkeypatch.setattr(LocalObjects, "put", put)
    emb, scales = random_block(np.random.default_rng(4), 256, 256)
    with pytest.raises(RuntimeError, match="killed"):
        store.write_unit(UNITS[1], 2024, emb, scales)
    monkeypatch.undo()
    publish(str(root), 2024)
    assert list(read_manifest(str(root), 2024).unit_id) == [UNITS[0].id]
    # the re-run writes the unit and it is published with all its objects
    store.write_unit(UNITS[1], 2024, emb, scales)
    publish(str(root), 2024)
    row = read_manifest(str(root), 2024).set_index("unit_id").loc[UNITS[1].id]
    assert sum("/embeddings_d32/" in o["key"] for o in row.objects) == 1


def test_a_chunk_of_zero_codes_with_valid_scales_is_stored(tmp_path):
    """Fill-valued codes at valid pixels are still written, so a missing chunk can never pass for zeros."""
    root = tmp_path / "r"
    store = EmbeddingStore.create_or_open(str(root), 256, 32, depths=(16,), compression="zstd")  # sparse shards
    store.prepare(2024, {31})
    emb, scales = random_block(np.random.default_rng(2), 256, 256, nan_fraction=0.0)
    emb[:64, :64, :16] = 0  # the first 64 x 64 chunk of embeddings_d16 holds only zeros
    store.write_unit(UNITS[0], 2024, emb, scales)
    data = (root / shard_key(31, "embeddings_d16", 0, UNITS[0].row, UNITS[0].col)).read_bytes()
    index = np.frombuffer(data[: 16 * 16], "<u8").reshape(-1, 2)
    assert (index[:, 0] != 2**64 - 1).all()


def test_depths_are_fixed_when_a_store_is_created(tmp_path):
    root = str(tmp_path / "r")
    EmbeddingStore.create_or_open(root, 256, 32, depths=(16, 32))
    assert EmbeddingStore.create_or_open(root, 256, 32).layout.depths == (16, 32)  # adopted
    with pytest.raises(UserInputError, match="created with Matryoshka depths 16,32, not 16; a store keeps its depths"):
        EmbeddingStore.create_or_open(root, 256, 32, depths=(16,))
    plain = str(tmp_path / "plain")
    EmbeddingStore.create_or_open(plain, 256, 32)
    assert "geoemb:depths" not in json.loads((Path(plain) / ZARR_DIR / "zarr.json").read_text())["attributes"]
    with pytest.raises(UserInputError, match="created with Matryoshka depths none, not 16"):
        EmbeddingStore.create_or_open(plain, 256, 32, depths=(16,))
