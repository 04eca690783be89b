"""The Barlow Twins training loop: one function a Ray Train worker (or a plain process) runs.

Every step is a pure function of (config, step): the batch, both views, the
mix coefficient and permutation and the dropout masks all come from seeds
derived from the step, the learning rate is computed from the step, and the
checkpoint holds the optimizer state. A run resumed from its last checkpoint
therefore reaches the same weights as one that never stopped (on the CPU,
where torch kernels are deterministic).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tessera_ray.errors import CheckpointError, UserInputError
from tessera_ray.model.checkpoint import save_checkpoint
from tessera_ray.model.config import check_data_source
from tessera_ray.model.family import family_of, get_variant, inference_rule, matryoshka_depths, output_dims
from tessera_ray.train import data
from tessera_ray.train.losses import LAMBDA, barlow_twins_loss, mix_inputs, mix_regulariser
from tessera_ray.train.projector import build_projector
from tessera_ray.train.schedule import lr_factor

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run's result (saved in its checkpoints)."""

    variant: str = "small"
    """Any registered variant of any family (v1 or v2)."""
    data_source: str | None = None
    """Statistics of a per-source variant (v1.1); recorded in the checkpoint."""
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 1e-6
    lambd: float = LAMBDA
    mix_weight: float = LAMBDA
    """Weight of the mix-based regulariser (0 turns it off)."""
    projector_width: int = 512
    projector_layers: int = 3
    """Upstream: 6 layers, 2048..16384 wide."""
    seq_len: int = 0
    """Time steps per view (0: the variant's draw length, 40 where it has none)."""
    pool_per_unit: int = 20000
    """Pixels drawn from each unit folder into the shuffled pool."""
    min_valid: int = 2
    grad_clip: float = 2.0
    seed: int = 0
    year: int = 0
    checkpoint_every: int = 200
    eval_every: int = 200
    log_every: int = 10

    def __post_init__(self) -> None:
        inference_rule(get_variant(self.variant), check_data_source(self.data_source))
        for name in ("steps", "batch_size", "projector_width", "projector_layers", "pool_per_unit", "min_valid",
                     "checkpoint_every", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup", "seq_len"):
            if getattr(self, name) < 0:
                raise UserInputError(f"{name} must be 0 or more, got {getattr(self, name)}")
        for name, positive in (("lr", True), ("grad_clip", True), ("weight_decay", False), ("lambd", False),
                               ("mix_weight", False)):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                kind = "a positive" if positive else "a non-negative"
                raise UserInputError(f"{name} must be {kind} finite number, got {getattr(self, name)}")
        if self.batch_size < 4:
            raise UserInputError("batch_size must be at least 4 (Barlow Twins standardises over the batch)")

    @property
    def encoder(self):
        return get_variant(self.variant)

    @property
    def rule(self):
        return inference_rule(self.encoder, self.data_source)

    @property
    def view_steps(self) -> int:
        return self.seq_len or getattr(self.encoder, "steps", 40)


def training_model(config: TrainConfig) -> nn.Module:
    """The encoder of any family with its training heads attached.

    ``projector`` (upstream's name) reads the whole embedding. A Matryoshka
    family also gets one projector per shorter prefix K (``prefix_projectors.dK``)
    so that the loss sees every prefix on its own (docs/learn.md). The encoder's
    keys stay the upstream checkpoint's; the heads are ignored at inference.
    """
    model = family_of(config.encoder).build(config.encoder)
    width = output_dims(config.encoder)
    model.projector = build_projector(config.projector_width, config.projector_layers, in_dim=width)
    prefixes = [k for k in matryoshka_depths(config.encoder) if k < width]
    if prefixes:
        model.prefix_projectors = nn.ModuleDict(
            {f"d{k}": build_projector(config.projector_width, config.projector_layers, in_dim=k) for k in prefixes})
    return model


def projection_heads(model: nn.Module) -> list[tuple[int | None, nn.Module]]:
    """(K, projector of the K-prefix), shortest first, the full embedding last."""
    heads = [(int(name[1:]), head) for name, head in getattr(model, "prefix_projectors", {}).items()]
    return [*sorted(heads, key=lambda kh: kh[0]), (None, model.projector)]


@dataclass
class Labelled:
    """Labelled pixels for the probe: their series and classes (split optional)."""

    series: list
    classes: np.ndarray
    test: np.ndarray | None = None


@dataclass
class RunResult:
    """Where a run ended: its last step, last loss and checkpoint."""

    step: int
    loss: float
    checkpoint: Path | None
    probe: dict | None = None


def _step_seed(seed: int, step: int) -> int:
    return data.view_seed(seed, step, 3) & 0x7FFFFFFF


def _device_batch(views, device):
    return [torch.from_numpy(a).to(device, non_blocking=True) for pair in views for a in pair]


class Twin(nn.Module):
    """Encoder then projector for every view in ONE forward call.

    DDP expects one forward per backward; the encoder runs once per view inside
    it (BatchNorm statistics stay per view, as in Barlow Twins).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.heads = projection_heads(model)

    def forward(self, *views: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], ...]:
        """Per view, the projections of every prefix (full embedding last)."""
        pairs = zip(views[0::2], views[1::2])
        out = []
        for s2, s1 in pairs:
            embedding = self.model(s2, s1)
            out.append(tuple(head(embedding if k is None else embedding[:, :k]) for k, head in self.heads))
        return tuple(out)


def prefix_loss(za: tuple[torch.Tensor, ...], zb: tuple[torch.Tensor, ...], lambd: float) -> torch.Tensor:
    """Barlow Twins averaged over the prefixes' projections (one term without prefixes)."""
    return torch.stack([barlow_twins_loss(a, b, lambd) for a, b in zip(za, zb)]).mean()


def training_loss(project: nn.Module, s2a, s1a, s2b, s1b, config: TrainConfig,
                  generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Barlow Twins on the two views' projections, plus the mix regulariser.

    Mix: alpha ~ Beta(1, 1) (uniform), x_m = alpha x_a + (1 - alpha) x_b[perm].
    """
    if config.mix_weight <= 0:
        za, zb = project(s2a, s1a, s2b, s1b)
        bt = prefix_loss(za, zb, config.lambd)
        return bt, {"bt": float(bt.detach())}
    alpha = float(torch.rand((), generator=generator))
    perm = torch.randperm(len(s2a), generator=generator).to(s2a.device)
    za, zb, zm = project(s2a, s1a, s2b, s1b, mix_inputs(s2a, s2b, alpha, perm), mix_inputs(s1a, s1b, alpha, perm))
    bt = prefix_loss(za, zb, config.lambd)
    # the mix regulariser on the full embedding's projection only
    mix = mix_regulariser(zm[-1], za[-1], zb[-1], alpha, perm, config.mix_weight)
    return bt + mix, {"bt": float(bt.detach()), "mix": float(mix.detach())}


def new_model(config: TrainConfig) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return training_model(config)


def _comparable(raw: dict) -> dict:
    """The parts of a train config that must match to resume (length and cadence may change)."""
    skip = ("steps", "checkpoint_every", "eval_every", "log_every")
    return {k: v for k, v in raw.items() if k not in skip}


def load_training_checkpoint(path: Path, config: TrainConfig) -> dict:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    saved = payload.get("train_config")
    if not isinstance(saved, dict) or not isinstance(family_of(config.encoder).state_of(payload), dict):
        raise CheckpointError(f"{path} is not a tessera-ray training checkpoint; cannot resume from it")
    if saved.get("variant") != config.variant:
        raise CheckpointError(
            f"{path} was trained as variant {saved.get('variant')!r}, not {config.variant!r}; "
            "use another output folder or the same variant"
        )
    if _comparable(saved) != _comparable(asdict(config)):
        diff = sorted(k for k, v in _comparable(asdict(config)).items() if saved.get(k) != v)
        raise CheckpointError(f"{path} was trained with other settings ({', '.join(diff)}); use another output folder")
    return payload


def run(config: TrainConfig, units: list[str], out_dir: str | Path, labelled: Labelled | None = None, *,
        resume: bool = True, device: str | None = None, rank: int = 0, world: int = 1,
        prepare=None, report=None, stop_after: int | None = None,
        quiet: bool = True, cpu_threads: int | None = None) -> RunResult:
    """Train (or continue) a run writing ``out_dir/checkpoint.pt`` and ``out_dir/train_log.jsonl``.

    ``rank``/``world``: this worker's share of each global batch (Ray Train).
    ``prepare`` wraps the module for distributed training; ``report`` receives
    every logged record; ``stop_after`` ends the process early (tests of resume).
    ``cpu_threads``: torch's intra-op threads for this run. On a shared,
    oversubscribed CPU one thread is often many times faster than two, whose
    spin-waiting workers fight other processes.
    """
    if cpu_threads is None:
        return _run(config, units, out_dir, labelled, resume, device, rank, world,
                    prepare, report, stop_after, quiet)
    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads)
    try:
        return _run(config, units, out_dir, labelled, resume, device, rank, world,
                    prepare, report, stop_after, quiet)
    finally:
        torch.set_num_threads(before)


def _run(config, units, out_dir, labelled, resume, device, rank, world, prepare, report,
         stop_after, quiet) -> RunResult:
    out = Path(out_dir)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cubes = [data.open_unit(u) for u in units]
    pool = data.build_pool(cubes, config.pool_per_unit, config.seed, config.year, config.min_valid)
    model = new_model(config)
    rule = config.rule
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    out.mkdir(parents=True, exist_ok=True)  # only once the data and the model are known to be good
    start = 0
    ckpt = out / CHECKPOINT
    if ckpt.exists():
        if not resume:
            raise UserInputError(f"{ckpt} exists; pass --resume to continue it or choose another output folder")
        payload = load_training_checkpoint(ckpt, config)
        model.load_state_dict(family_of(config.encoder).state_of(payload))
        optimizer.load_state_dict(payload["optimizer_state_dict"])
        start = int(payload["step"])
    model.to(dev)
    _optimizer_to(optimizer, dev)
    project = Twin(model)
    if prepare is not None:
        project = prepare(project)
    model.train()
    per_rank = max(2, config.batch_size // world)
    steps_per_epoch = max(1, len(pool) // (per_rank * world))
    amp = dev.type == "cuda"
    log = (out / LOG).open("a") if rank == 0 else None
    loss_value, probe = float("nan"), None
    t0 = time.perf_counter()
    step = start
    try:
        for step in range(start, config.steps):
            if stop_after is not None and step >= stop_after:
                break
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(step, config.warmup, config.steps)
            index = data.batch_indices(len(pool), per_rank * world, config.seed, step)[rank::world]
            views = data.two_views(pool, index, rule, config.seed, step, config.view_steps)
            torch.manual_seed(_step_seed(config.seed, step))  # dropout masks
            generator = torch.Generator().manual_seed(_step_seed(config.seed + 1, step))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                s2a, s1a, s2b, s1b = _device_batch(views, dev)
                loss, parts = training_loss(project, s2a, s1a, s2b, s1b, config, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
            optimizer.step()
            loss_value = float(loss.detach())
            done = step + 1
            record = None
            if done % config.log_every == 0 or done == config.steps:
                record = {"step": done, "loss": loss_value, **parts, "lr": optimizer.param_groups[0]["lr"],
                          "grad_norm": grad_norm, "seconds": round(time.perf_counter() - t0, 2)}
            if labelled is not None and (done % config.eval_every == 0 or done == config.steps):
                probe = probe_score(model, config, labelled)
                model.train()
                record = {**(record or {"step": done, "loss": loss_value}), **probe}
            if done % config.checkpoint_every == 0 or done == config.steps:
                if rank == 0:
                    _save(model, optimizer, config, ckpt, done, steps_per_epoch)
            if record is not None:
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if not quiet and rank == 0:
                    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
                          flush=True)
                if report is not None:
                    report(record, ckpt if ckpt.exists() else None)
        else:
            step = config.steps
        if stop_after is not None and step < config.steps and rank == 0:
            _save(model, optimizer, config, ckpt, step, steps_per_epoch)
    finally:
        if log is not None:
            log.close()
    return RunResult(step, loss_value, ckpt if ckpt.exists() else None, probe)


def _optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for state in optimizer.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                state[k] = v.to(device)


def _save(model: nn.Module, optimizer, config: TrainConfig, path: Path, step: int, steps_per_epoch: int) -> None:
    save_checkpoint(model, path, config.encoder, data_source=config.data_source,
                    epoch=step // steps_per_epoch, step=step,
                    optimizer_state_dict=optimizer.state_dict(), train_config=asdict(config))


def embed_labelled(model: nn.Module, encoder, labelled: Labelled, data_source: str | None = None) -> np.ndarray:
    """Dequantised embeddings of the labelled pixels, through the deployed inference path."""
    from tessera_ray.model.inference import encode_pixels

    parts = [encode_pixels(model, encoder, s, data_source=data_source).dequantised() for s in labelled.series]
    return np.concatenate(parts) if parts else np.zeros((0, output_dims(encoder)), np.float32)


def probe_score(model: nn.Module, config: TrainConfig, labelled: Labelled) -> dict:
    """A logistic-regression probe on the current embeddings (held-out split, else k-fold)."""
    from tessera_ray.heads.evaluate import probe_accuracy

    with torch.no_grad():
        features = embed_labelled(model, config.encoder, labelled, config.data_source)
    return probe_accuracy(np.nan_to_num(features), labelled.classes, labelled.test)


def labelled_points(units: list[str], lons, lats, classes, test=None, year: int = 0) -> Labelled:
    """The labelled points that fall inside the unit folders, for the probe."""
    cubes = [data.open_unit(u) for u in units]
    series, where = data.series_at_points(cubes, np.asarray(lons), np.asarray(lats), year)
    order = np.concatenate(where) if where else np.zeros(0, np.int64)
    if order.size == 0:
        raise UserInputError("none of the labelled points lies inside the training unit folders")
    return Labelled(series, np.asarray(classes)[order], None if test is None else np.asarray(test, bool)[order])
