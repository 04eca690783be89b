"""Does training help? Linear probes on the synthetic world's held-out labels.

Four feature sets for the same labelled pixels (the world's ``labels.parquet``,
``split`` column: fit on "train", score on "test"):

* ``trained``: the demo encoder (``ensure_demo_encoder``: trained by
  ``tessera_ray.train`` on the world's central block), dequantised int8 embeddings;
  the same recipe is trained with each of ``--seeds`` and the mean reported;
* ``random``: the same variant with random weights (seed 0), same inference path;
* ``raw``: monthly median composites of the ten Sentinel-2 bands (120 features);
* ``raw+s1``: the same plus monthly medians of Sentinel-1 VV and VH (144 features),
  the encoder's other input.

For each, a standardised logistic regression is fitted on k labels per class
drawn from the train split (k = 1, 2, 5, 10, 20, 40; 5 draws each) and scored
on every test point (accuracy, macro F1).

A Matryoshka encoder (family v2) also gets rows per depth: the same probe at
1, 10 and 40 labels per class on the first K of the dequantised dimensions,
K = 16, 32, 64, 128, for the trained and the random encoder. In a Matryoshka
store a depth-K reader gets the first K int8 codes of the 128-d quantisation
with the shared scale, so these prefixes are exactly what it reads.

    python jobs/report_quality.py [--world DIR] [--out DIR] [--seeds 0 1 2 3 4 | --checkpoint PT]

Writes bench-results/report_quality.json, .md and .png (the label-efficiency curves).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tessera_ray.cli import fail  # noqa: E402
from tessera_ray.errors import TesseraError  # noqa: E402
from tessera_ray.heads.evaluate import label_efficiency  # noqa: E402
from tessera_ray.heads.features import monthly_composites, monthly_sar_composites  # noqa: E402
from tessera_ray.heads.report import plot_curves  # noqa: E402
from tessera_ray.model import build_encoder, encode_pixels, read_checkpoint  # noqa: E402
from tessera_ray.model.family import matryoshka_depths  # noqa: E402
from tessera_ray.train import data  # noqa: E402
from tessera_ray.train.demo import DEMO_CONFIG, NAME, ensure_demo_encoder, world_cube  # noqa: E402

CURVE = (1, 2, 5, 10, 20, 40)
DEPTH_CURVE = (1, 10, 40)


def features_at_labels(world: Path, work: Path):
    import geopandas as gpd

    cube = world_cube(world, work, size=0, name="report-cube")
    labels = gpd.read_parquet(world / "labels.parquet")
    series, where = data.series_at_points([data.open_unit(str(cube))], labels.geometry.x.to_numpy(),
                                          labels.geometry.y.to_numpy())
    order = np.concatenate(where)
    return series, labels["class_name"].to_numpy()[order], (labels["split"].to_numpy()[order] == "test")


def embed(model, config, series) -> np.ndarray:
    return np.concatenate([encode_pixels(model, config, s).dequantised() for s in series])


def depth_lines(by_depth: dict[str, dict[str, dict]]) -> list[str]:
    """The per-depth table (Matryoshka prefixes of the dequantised embeddings), or nothing."""
    if not by_depth:
        return []
    ks = [str(k) for k in DEPTH_CURVE]
    lines = ["", "Matryoshka depths: the probe on the first K dimensions of the same embeddings.", "",
             "| features | dims | " + " | ".join(f"{k}/class acc (F1)" for k in ks) + " |",
             "|---|---:|" + "---|" * len(ks)]
    for name, rows in by_depth.items():
        for depth, row in rows.items():
            cells = [f"{row[k]['accuracy']:.3f} ({row[k]['macro_f1']:.3f})" if k in row else "-" for k in ks]
            lines.append(f"| {name} | {depth} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=Path("tessera-demo/world"))
    parser.add_argument("--out", type=Path, default=Path("tessera-demo/model"),
                        help="the demo encoder folder (tessera-ray demo writes tessera-demo/model)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="one encoder to score (default: the demo recipe, trained once per --seeds)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="training seeds of the demo recipe (seed 0 is the demo's own encoder)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                        help="change one field of the demo recipe (TrainConfig), e.g. --set steps=400; "
                             "the encoders are then kept apart from the demo's")
    parser.add_argument("--results", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    try:
        recipe = replace(DEMO_CONFIG, **{k: type(getattr(DEMO_CONFIG, k))(v) for k, v in
                                         (item.split("=", 1) for item in args.settings)})
    except (AttributeError, TypeError, ValueError) as exc:
        parser.error(f"--set: {exc}")
    stem = NAME + "".join(f"-{item}" for item in args.settings)
    given = read_checkpoint(args.checkpoint) if args.checkpoint else None  # a bad path fails before any work
    if not (args.world / "world.json").is_file():
        from tessera_ray.synthetic import generate_world

        print(f"generating the demo world in {args.world} ...", flush=True)
        generate_world(args.world, preset="demo")
    t0 = time.perf_counter()
    if args.checkpoint:
        checkpoints = {"trained": args.checkpoint}
    else:  # seeds move the score by about 0.02: one encoder alone would say little
        checkpoints = {f"trained (seed {seed})": ensure_demo_encoder(
            args.world, args.out, replace(recipe, seed=seed), name=stem if seed == 0 else f"{stem}-seed{seed}")
            for seed in args.seeds}
    train_seconds = time.perf_counter() - t0
    loaded = {"trained": given} if given else {name: read_checkpoint(path) for name, path in checkpoints.items()}
    config = next(iter(loaded.values())).config
    series, classes, test = features_at_labels(args.world, args.out)
    sets = {name: embed(one.model, one.config, series) for name, one in loaded.items()}
    sets["random"] = embed(build_encoder(config, seed=0), config, series)
    sets["raw"] = np.concatenate([monthly_composites(s) for s in series])
    sets["raw+s1"] = np.concatenate([np.hstack([monthly_composites(s), monthly_sar_composites(s)]) for s in series])
    keep = np.all([np.isfinite(f).all(axis=1) for f in sets.values()], axis=0)
    results = {}
    for name, feats in sets.items():
        curve = label_efficiency(feats[keep], classes[keep], per_class=CURVE, test=test[keep], repeats=5)
        results[name] = {str(r["per_class"]): r for r in curve}
    ks = [str(k) for k in CURVE]
    trained = [name for name in sets if name.startswith("trained")]
    if len(trained) > 1:
        results["trained (mean)"] = {k: {m: float(np.mean([results[n][k][m] for n in trained]))
                                         for m in ("accuracy", "macro_f1")} | {"per_class": int(k)}
                                     for k in ks if all(k in results[n] for n in trained)}
    depths = matryoshka_depths(config)
    by_depth: dict[str, dict[str, dict]] = {}
    if len(depths) > 1:  # a Matryoshka encoder: every prefix is an embedding on its own
        for name in [*trained, "random"]:
            by_depth[name] = {}
            for depth in depths:
                curve = label_efficiency(sets[name][keep][:, :depth], classes[keep], per_class=DEPTH_CURVE,
                                         test=test[keep], repeats=5)
                by_depth[name][str(depth)] = {str(r["per_class"]): r for r in curve}
        if len(trained) > 1:
            by_depth["trained (mean)"] = {
                str(depth): {k: {m: float(np.mean([by_depth[n][str(depth)][k][m] for n in trained]))
                                 for m in ("accuracy", "macro_f1")} | {"per_class": int(k)}
                             for k in map(str, DEPTH_CURVE) if all(k in by_depth[n][str(depth)] for n in trained)}
                for depth in depths}
            by_depth = {"trained (mean)": by_depth.pop("trained (mean)"), **by_depth}
    lines = [
        f"Linear probe (logistic regression) on the synthetic demo world's held-out labels "
        f"({int((test & keep).sum())} test points, {len(np.unique(classes))} classes; "
        f"train labels per class drawn from {int((~test & keep).sum())} train points, 5 draws). "
        f"Encoder: `{config.name}`, " + ", ".join(f"`{path}`" for path in checkpoints.values()) + ".",
        "",
        "| features | " + " | ".join(f"{k}/class acc (F1)" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for name in results:
        cells = [
            f"{results[name][k]['accuracy']:.3f} ({results[name][k]['macro_f1']:.3f})" if k in results[name] else "-"
            for k in ks
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    at10 = {name: results[name].get("10", {}).get("accuracy") for name in results}
    best = "trained (mean)" if "trained (mean)" in results else trained[0]
    spread = [at10[n] for n in trained]
    lines += ["", f"At 10 labels per class: trained {at10[best]:.3f}"
                  + (f" ({min(spread):.3f} to {max(spread):.3f} over {len(spread)} seeds)" if len(spread) > 1 else "")
                  + f", random weights {at10['random']:.3f}, raw monthly composites {at10['raw']:.3f} "
                  f"(with Sentinel-1 {at10['raw+s1']:.3f}).",
              *depth_lines(by_depth),
              "", "Command: `python jobs/report_quality.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`"]
    text = "\n".join(lines)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    keys = {name: json.loads(path.with_suffix(".json").read_text()) for name, path in checkpoints.items()
            if path.with_suffix(".json").is_file()}
    record = {"checkpoints": {n: str(p) for n, p in checkpoints.items()}, "variant": config.name, "results": results,
              "at_10": at10, "depths": by_depth, "test_points": int((test & keep).sum()),
              "encoder_seconds": round(train_seconds, 1),
              "training": keys, "machine": platform.machine(), "python": platform.python_version()}
    (args.results / "report_quality.json").write_text(json.dumps(record, indent=1))
    (args.results / "report_quality.md").write_text(text + "\n")
    plotted = [n for n in results if n not in trained or len(trained) == 1]
    plot_curves({name: list(results[name].values()) for name in plotted}, args.results / "report_quality.png",
                f"linear probe, synthetic world ({config.name} encoder)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except TesseraError as exc:  # a bad checkpoint, world or label file: one line, no traceback
        fail(str(exc), exc.exit_code)
