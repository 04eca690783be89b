"""Sizing a run before it starts: what ``embed --dry-run`` prints per year.

Counts come from the plan (land units, pixels, scenes over each unit, blocks);
the conversions to requests, bytes fetched, hours and money come from a price
table (``prices.yaml`` beside ``cluster.yaml``), whose throughput figures name
the benchmark they were measured with. Instance types and slots per node come
from ``cluster.yaml``'s node types (``reader``: the ``tessera_reader``
resource, one read task per slot; ``encoder``: one GPU actor per GPU), so the
estimate follows the cluster an operator is about to start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tessera_ray.errors import UserInputError

if TYPE_CHECKING:
    from tessera_ray.pipeline.plan import YearPlan

GPU_PX_PER_S = 100_000.0
"""Default encoder speed per GPU: the H100 goal for v2-medium (README); not yet measured, so stated."""
PART_RECORD_PUTS = 1
"""Beside its shards, a unit puts one part record."""


@dataclass(frozen=True)
class NodeType:
    """A worker type of ``cluster.yaml``: instance type, slots, spot or not, how many at most."""

    name: str
    instance: str
    slots: int
    spot: bool
    max_workers: int


@dataclass(frozen=True)
class Prices:
    """The price table and throughput figures of ``prices.yaml``."""

    instances: dict[str, Any]
    """instance type -> {"on_demand": USD/h, "spot": USD/h}"""
    get_per_1000: float
    put_per_1000: float
    storage_gb_month: float
    reader_bytes_per_s: float
    """Decoded input bytes one read slot produces per second."""
    requests_per_asset_block: float
    fetched_per_decoded: float
    source: str = ""

    def hourly(self, node: NodeType) -> float:
        price = self.instances.get(node.instance)
        if not price:
            raise UserInputError(f"{self.source}: no price for instance type {node.instance} "
                                 f"(node type {node.name} of the cluster); add it under instances:")
        return float(price["spot"] if node.spot and "spot" in price else price["on_demand"])


def _yaml(path: str | Path, what: str) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UserInputError(f"{what} {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UserInputError(f"{what} {path} is not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise UserInputError(f"{what} {path} is not a YAML mapping")
    return doc


def load_prices(path: str | Path) -> Prices:
    doc = _yaml(path, "--prices")
    try:
        s3, speed = doc["s3"], doc["throughput"]
        return Prices(
            instances=dict(doc["instances"]), get_per_1000=float(s3["get_per_1000"]),
            put_per_1000=float(s3["put_per_1000"]), storage_gb_month=float(s3["storage_gb_month"]),
            reader_bytes_per_s=float(speed["reader_decoded_bytes_per_s_per_slot"]),
            requests_per_asset_block=float(speed["requests_per_asset_block"]),
            fetched_per_decoded=float(speed["fetched_bytes_per_decoded_byte"]), source=str(path),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserInputError(f"--prices {path}: missing or bad entry {exc}") from None


def load_node_types(path: str | Path) -> dict[str, NodeType]:
    """The ``reader`` and ``encoder`` node types of a Ray autoscaler config (``cluster.yaml``)."""
    doc = _yaml(path, "--cluster")
    types = doc.get("available_node_types") or {}
    found = {}
    for role, resource in (("reader", "tessera_reader"), ("encoder", "tessera_encoder")):
        for name, spec in types.items():
            resources = spec.get("resources") or {}
            if resource in resources:
                config = spec.get("node_config") or {}
                market = (config.get("InstanceMarketOptions") or {}).get("MarketType")
                slots = int(resources.get("GPU", resources[resource]))
                found[role] = NodeType(name, str(config.get("InstanceType")), max(1, slots), market == "spot",
                                       int(spec.get("max_workers", 1)))
                break
        else:
            raise UserInputError(f"--cluster {path}: no node type with the {resource} resource")
    head = types.get(doc.get("head_node_type"))
    if head:
        found["head"] = NodeType(str(doc["head_node_type"]), str((head.get("node_config") or {}).get("InstanceType")),
                                 0, False, 1)
    return found


@dataclass(frozen=True)
class SizingInputs:
    """What ``--dry-run`` prices a plan with (``--prices``, ``--cluster``, ``--gpu-px-per-s``)."""

    prices: Prices | None = None
    nodes: dict[str, NodeType] | None = None
    gpu_px_per_s: float = GPU_PX_PER_S

    @classmethod
    def load(cls, prices: str | None, cluster: str | None, gpu_px_per_s: float = GPU_PX_PER_S) -> SizingInputs:
        """Read the files given; ``None`` for either leaves that part of the estimate out."""
        if gpu_px_per_s <= 0:
            raise UserInputError(f"--gpu-px-per-s must be positive, got {gpu_px_per_s}")
        return cls(load_prices(prices) if prices else None, load_node_types(cluster) if cluster else None,
                   gpu_px_per_s)


@dataclass(frozen=True)
class Sizing:
    """What one year of a plan costs, in counts, bytes, hours and dollars."""

    units: int
    pixels: int
    blocks: int
    read_requests: int
    decoded_bytes: int
    fetched_bytes: int
    write_bytes: int
    put_requests: int
    gpu_hours: float
    reader_slot_hours: float
    reader_node_hours: float = 0.0
    encoder_node_hours: float = 0.0
    wall_hours: float = 0.0
    """At the cluster's largest size (max_workers of each node type)."""
    cost: dict[str, float] | None = None
    """USD by item (readers, encoders, head, S3 GET, S3 PUT, storage per month), None without prices."""


def size_year(plan: YearPlan, block_size: int, depths: tuple[int, ...] = (), gpu_px_per_s: float = GPU_PX_PER_S,
              prices: Prices | None = None, nodes: dict[str, NodeType] | None = None) -> Sizing:
    """Size one :class:`~tessera_ray.pipeline.plan.YearPlan` (its units to embed, not the published ones)."""
    from tessera_ray.pipeline.plan import OUTPUT_BYTES, S1_INPUT_BYTES, S2_INPUT_BYTES
    from tessera_ray.sources.scenes import S2

    blocks = asset_blocks = decoded = 0
    for unit in plan.units:
        near = plan.scene_index.near(unit.zone, unit.window)
        unit_blocks = math.ceil(unit.window.height / block_size) * math.ceil(unit.window.width / block_size)
        blocks += unit_blocks
        asset_blocks += unit_blocks * sum(len(s.assets) for s in near)
        decoded += unit.window.size * sum(S2_INPUT_BYTES if s.kind == S2 else S1_INPUT_BYTES for s in near)
    pixels = sum(u.window.size for u in plan.units)
    write = pixels * (OUTPUT_BYTES + sum(depths))
    shards = 2 + len(depths)  # embeddings, scales, one array per prefix depth
    puts = len(plan.units) * (shards + PART_RECORD_PUTS)
    gpu_hours = pixels / gpu_px_per_s / 3600
    if prices is None:
        return Sizing(len(plan.units), pixels, blocks, 0, decoded, 0, write, puts, gpu_hours, 0.0)
    requests = round(asset_blocks * prices.requests_per_asset_block)
    slot_hours = decoded / prices.reader_bytes_per_s / 3600
    sizing = Sizing(len(plan.units), pixels, blocks, requests, decoded, round(decoded * prices.fetched_per_decoded),
                    write, puts, gpu_hours, slot_hours)
    if nodes is None:
        return sizing
    reader, encoder = nodes["reader"], nodes["encoder"]
    reader_hours = slot_hours / reader.slots
    encoder_hours = gpu_hours / encoder.slots
    wall = max(reader_hours / max(reader.max_workers, 1), encoder_hours / max(encoder.max_workers, 1))
    cost = {
        f"readers ({reader.instance}{', spot' if reader.spot else ''})": reader_hours * prices.hourly(reader),
        f"encoders ({encoder.instance}{', spot' if encoder.spot else ''})": encoder_hours * prices.hourly(encoder),
        "S3 GET": requests / 1000 * prices.get_per_1000,
        "S3 PUT": puts / 1000 * prices.put_per_1000,
        "storage per month": write / 1e9 * prices.storage_gb_month,
    }
    head = nodes.get("head")
    if head is not None:
        cost[f"head ({head.instance})"] = wall * prices.hourly(head)
    return replace(sizing, reader_node_hours=reader_hours, encoder_node_hours=encoder_hours, wall_hours=wall,
                   cost=cost)
