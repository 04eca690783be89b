"""Encoder throughput: the optimised inference path against a plain PyTorch loop.

For each variant (both families: v1 and the four v2 student sizes with
random weights and upstream structure), synthetic pixels of one block go through
* ``encode_pixels`` (vectorised sampling, sequence-length groups, device
  batches, ``inference_mode``; bf16 on a GPU for v1) at several batch sizes, on
  a block of realistic size (the actor sees whole blocks: its sequence-length
  groups are then full, where a few dozen pixels would leave most groups short
  and padded), and
* a baseline: a Python loop over pixels preparing one pixel at a time with
  the family's rule, one fp32 forward per pixel under ``no_grad``, no grouping,
  timed on the first pixels of the same block (a pixel costs the loop the same
  whatever the block size, so its pixels per second do not depend on how many
  it is given).

Both use the same per-pixel seeds, so their outputs must agree on the pixels
both ran; the report gives pixels per second (median of repeats), the speed-up
over the baseline and the largest difference between the two outputs
(dequantised, and in int8 steps).

Why batching cannot do more on a CPU, measured for each variant: the share of
the loop's time spent in matrix products (torch's profiler), and the fp32
matrix-product rate at the loop's row count (one pixel's sequence) against the
batch's (the variant's feed-forward shape). Batching removes the rest of the
loop's time and moves the products to the batched rate, so
``ceiling = 1 / (share * rate_loop / rate_batched)`` bounds its speed-up.

    python jobs/bench_encode.py            # default, ~3 min on 2 cores
    python jobs/bench_encode.py --quick    # smoke run, ~30 s

Writes bench-results/bench_encode.json and bench-results/bench_encode.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tessera_ray.model import (  # noqa: E402
    PixelSeries,
    build_encoder,
    encode_pixels,
    get_variant,
    inference_rule,
    output_dims,
    runner_for,
)

# variant -> (block pixels, loop pixels, batch sizes) for the default and the quick run
PLAN = {
    "tiny": ((2048, 256, (16, 64, 256)), (256, 64, (64,))),
    "small": ((1024, 128, (16, 64, 256)), (128, 32, (64,))),
    "v1.0-qat": ((256, 32, (16, 32)), (32, 8, (16,))),
    "v1.0": ((128, 16, (16, 32)), (16, 4, (16,))),
    "v1.1": ((256, 32, (32,)), (32, 4, (16,))),
    "v2-nano": ((2048, 256, (32, 128, 512)), (256, 32, (64,))),
    "v2-small": ((1024, 128, (16, 64, 256)), (128, 16, (32,))),
    "v2-medium": ((512, 48, (16, 64, 256)), (64, 8, (16,))),
    "v2-large": ((256, 32, (16, 64, 256)), (32, 4, (16,))),
}
DATA_SOURCE = "aws"  # v1.1's statistics (the others have one set)
RUN_SEED = 7


def synthetic_pixels(n: int, seed: int = 0) -> PixelSeries:
    """A year of plausible-looking series of one block: ~70 S2 dates, two SAR orbits.

    Clouds and SAR gaps are mostly shared by the block's pixels (clouds cover
    neighbourhoods, swaths cover strips), with a few pixel-level differences,
    so valid counts cluster the way they do in a real unit.
    """
    rng = np.random.default_rng(seed)
    t, ta, td = 72, 30, 30
    doys = np.sort(rng.choice(np.arange(1, 367), t, replace=False))
    season = np.sin(doys / 366 * 2 * np.pi)[None, :, None]
    base = rng.uniform(500, 4000, (n, 1, 10))
    bands = np.clip(base * (1 + 0.3 * season) + rng.normal(0, 150, (n, t, 10)), 1, 12000)
    clear_dates = rng.random(t) < 0.55
    masks = (clear_dates[None, :] ^ (rng.random((n, t)) < 0.05)).astype(np.uint8)
    sar = rng.integers(2000, 9000, (n, ta + td, 2)).astype(np.int16)
    sar[:, rng.random(ta + td) < 0.2] = 0
    sar[rng.random((n, ta + td)) < 0.02] = 0
    return PixelSeries(
        block_id="bench", year=2024, zone=31,
        rows=np.arange(n) // 64, cols=np.arange(n) % 64,
        s2_bands=bands.astype(np.uint16), s2_masks=masks, s2_doys=doys.astype(np.uint16),
        sar_ascending=sar[:, :ta], sar_ascending_doys=np.linspace(3, 360, ta).astype(np.int16),
        sar_descending=sar[:, ta:], sar_descending_doys=np.linspace(6, 363, td).astype(np.int16),
    )


# ------------------------------------------------------------------ baseline


def baseline(model, config, pixels: PixelSeries) -> tuple[np.ndarray, np.ndarray]:
    """A plain loop: per pixel, the family's rule on that pixel alone, one fp32 forward, quantise."""
    rule = inference_rule(config, DATA_SOURCE)
    n = len(pixels)
    q_out = np.zeros((n, output_dims(config)), np.int8)
    s_out = np.full(n, rule.min_scale, np.float32)
    with torch.no_grad():
        for i in range(n):
            prepared = rule.prepare(pixels.take([i]), RUN_SEED)
            if prepared.nodata[0]:
                s_out[i] = np.nan
                continue
            for group in prepared.groups:
                e = model(torch.from_numpy(group.s2), torch.from_numpy(group.s1))
                q, scale = rule.quantise(e)
                q_out[i], s_out[i] = q[0].numpy(), float(scale[0])
    return q_out, s_out


# ------------------------------------------------------------------ measuring


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def compare(a_q, a_s, b_q, b_s) -> dict:
    both = np.isfinite(a_s) & np.isfinite(b_s)
    deq_a = a_q[both].astype(np.float32) * a_s[both, None]
    deq_b = b_q[both].astype(np.float32) * b_s[both, None]
    return {
        "max_abs_diff": float(np.abs(deq_a - deq_b).max()) if both.any() else 0.0,
        "max_int8_step_diff": int(np.abs(a_q.astype(int) - b_q.astype(int)).max()),
        "int8_values_differing": float(np.mean(a_q != b_q)),
        "identical_bytes": bool(np.array_equal(a_q, b_q) and np.array_equal(a_s, b_s, equal_nan=True)),
        "same_nodata": bool(np.array_equal(np.isnan(a_s), np.isnan(b_s))),
    }


def bench_variant(name: str, n: int, m: int, batch_sizes, repeats: int, cuda: bool) -> dict:
    """``n`` block pixels through the batched path, the first ``m`` of them through the loop."""
    config = get_variant(name)
    model = build_encoder(config, seed=0)
    pixels = synthetic_pixels(n, seed=1)
    looped = pixels.take(slice(0, m))
    # one baseline run: it is the slow reference, and its timing drifts least
    base_s, (base_q, base_sc) = timed(lambda: baseline(model, config, looped), 1)
    base_px_s = m / base_s
    rule = inference_rule(config, DATA_SOURCE)
    groups = rule.prepare(pixels, RUN_SEED).groups
    row = {"variant": name, "pixels": n, "loop_pixels": m, "length_groups": len(groups),
           "largest_group": max(len(g.pixels) for g in groups), "baseline_px_s": base_px_s,
           "cpu": [], "gpu": None}
    for bs in batch_sizes:
        runner = runner_for(model, rule, "cpu", batch_size=bs)
        secs, out = timed(partial(encode_pixels, runner, config, pixels, seed=RUN_SEED, data_source=DATA_SOURCE),
                          repeats)
        row["cpu"].append({"batch_size": bs, "px_s": n / secs, "speedup": n / secs / base_px_s,
                           **compare(out.embeddings[:m], out.scales[:m], base_q, base_sc)})
    best = max(row["cpu"], key=lambda r: r["px_s"])
    row["ceiling"] = batching_ceiling(model, config, looped, rule, best["batch_size"])
    # bf16 autocast on the CPU, best batch: speed and agreement with fp32 (students run fp32
    # upstream, so bf16 is opt-in, never the default)
    fp32 = encode_pixels(runner_for(model, rule, "cpu", batch_size=best["batch_size"]), config, pixels,
                         seed=RUN_SEED, data_source=DATA_SOURCE)
    runner = runner_for(model, rule, "cpu", batch_size=best["batch_size"], bf16=True)
    secs, out = timed(lambda: encode_pixels(runner, config, pixels, seed=RUN_SEED, data_source=DATA_SOURCE),
                      repeats)
    row["cpu_bf16"] = {"batch_size": best["batch_size"], "px_s": n / secs, "speedup": n / secs / base_px_s,
                       "min_cosine_to_fp32": min_cosine(out, fp32)}
    if cuda:
        row["gpu"] = []
        for bs in (256, 1024, 4096):
            runner = runner_for(build_encoder(config, seed=0), rule, "cuda", batch_size=bs)
            gpu_pixels = synthetic_pixels(max(n, 4 * bs) if name in ("tiny", "small") else max(n, bs), 1)
            encode_pixels(runner, config, gpu_pixels.take(slice(0, min(len(gpu_pixels), bs))), RUN_SEED,
                          data_source=DATA_SOURCE)
            secs, out = timed(partial(encode_pixels, runner, config, gpu_pixels, seed=RUN_SEED,
                                      data_source=DATA_SOURCE), repeats)
            ref = encode_pixels(model, config, gpu_pixels.take(slice(0, n)), seed=RUN_SEED, data_source=DATA_SOURCE)
            row["gpu"].append({"batch_size": bs, "pixels": len(gpu_pixels), "px_s": len(gpu_pixels) / secs,
                               **compare(out.embeddings[:n], out.scales[:n], ref.embeddings, ref.scales)})
        model.to("cpu")
    return row


def batching_ceiling(model, config, looped: PixelSeries, rule, batch_size: int) -> dict:
    """What batching could at best do over the loop on this CPU (see the module docstring).

    The model's matrix-product FLOPs per pixel (torch's FLOP counter) at the best
    fp32 matrix-product rate this CPU reached for the variant's feed-forward shape
    (any row count from one pixel's to a large batch's) is the least time any
    fp32 batching can take per pixel; the loop's measured time per pixel over it
    is the ceiling of the speed-up.
    """
    from torch.utils.flop_counter import FlopCounterMode

    sample = looped.take(slice(0, min(len(looped), 8)))
    start = time.perf_counter()
    baseline(model, config, sample)
    loop_s = (time.perf_counter() - start) / len(sample)
    flops = 0
    # with gradients on, torch's transformer layers take their composite path, whose matrix
    # products the counter sees (their fused inference path is one opaque op to it)
    with torch.enable_grad():
        for i in range(len(sample)):
            prepared = rule.prepare(sample.take([i]), RUN_SEED)
            for group in prepared.groups:
                with FlopCounterMode(display=False) as counter:
                    model(torch.from_numpy(group.s2), torch.from_numpy(group.s1))
                flops += counter.get_total_flops()
    flops /= len(sample)
    width = getattr(config, "d", None) or 4 * config.latent
    rates = {rows: matmul_rate(rows, width, config.ffn) for rows in (48, 384, 1536, 48 * batch_size)}
    best = max(rates.values())
    return {"flops_per_pixel": flops, "loop_gflops": flops / loop_s / 1e9,
            "matmul_gflops": {str(k): v / 1e9 for k, v in rates.items()}, "best_matmul_gflops": best / 1e9,
            "ceiling": loop_s * best / flops if flops else None}


def matmul_rate(rows: int, k: int, n: int, seconds: float = 0.5) -> float:
    """fp32 FLOP/s of (rows, k) @ (k, n) on this CPU, median of timed repeats."""
    a, b = torch.randn(rows, k), torch.randn(k, n)
    a @ b
    reps = max(3, int(2e8 // (2 * rows * k * n)) or 1)
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        times.append((time.perf_counter() - start) / reps)
        if len(times) >= 50:
            break
    return 2 * rows * k * n / statistics.median(times)


def min_cosine(a, b) -> float:
    """The smallest cosine similarity between two runs' dequantised embeddings (valid pixels)."""
    x, y = a.dequantised(), b.dequantised()
    both = np.isfinite(a.scales) & np.isfinite(b.scales) & (np.abs(x).sum(1) > 0) & (np.abs(y).sum(1) > 0)
    x, y = x[both], y[both]
    return float(((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)).min())


def markdown(report: dict) -> str:
    lines = [
        f"Encoder throughput, CPU ({report['cpu_threads']} torch threads, {report['cpu']}); "
        f"GPU: {report['gpu'] or 'not measured (no GPU on this machine)'}.",
        "Baseline: Python loop over pixels, the family's rule on one pixel at a time, fp32 forward "
        "of one pixel, no grouping. Same per-pixel seeds, so outputs are compared: a forward of one pixel "
        "rounds floats slightly differently (~1e-6) from a batched one, which now and then "
        "moves an int8 value by one step.",
        "",
        "| variant | pixels (loop) | batch | px/s | baseline px/s | speed-up | max abs diff | max int8 steps "
        "| int8 values differing | identical |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["results"]:
        for r in row["cpu"]:
            lines.append(
                f"| {row['variant']} | {row['pixels']} ({row['loop_pixels']}) | {r['batch_size']} | {r['px_s']:.1f} | "
                f"{row['baseline_px_s']:.1f} | {r['speedup']:.2f}x | {r['max_abs_diff']:.2e} | "
                f"{r['max_int8_step_diff']} | {100 * r['int8_values_differing']:.3f}% | "
                f"{'yes' if r['identical_bytes'] else 'no'} |"
            )
    lines += ["", "What fp32 batching can do at best on this CPU: the model's matrix-product FLOPs per pixel, the "
              "rate the loop reaches, and the best fp32 matrix-product rate measured for the variant's "
              "feed-forward shape (48 rows to a batch's); their ratio bounds any fp32 batching's speed-up:", "",
              "| variant | MFLOP per pixel | loop GFLOP/s | best matmul GFLOP/s | ceiling | measured |",
              "|---|---:|---:|---:|---:|---:|"]
    for row in report["results"]:
        c, best = row["ceiling"], max(row["cpu"], key=lambda r: r["px_s"])
        ceiling = f"{c['ceiling']:.2f}x" if c["ceiling"] else "-"
        lines.append(f"| {row['variant']} | {c['flops_per_pixel'] / 1e6:.0f} | {c['loop_gflops']:.1f} | "
                     f"{c['best_matmul_gflops']:.1f} | {ceiling} | {best['speedup']:.2f}x |")
    lines += ["", "bf16 autocast on the CPU (opt-in; the default stays fp32, as upstream):", "",
              "| variant | batch | px/s | speed-up over the loop | min cosine to fp32 |", "|---|---:|---:|---:|---:|"]
    for row in report["results"]:
        r = row["cpu_bf16"]
        lines.append(f"| {row['variant']} | {r['batch_size']} | {r['px_s']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['min_cosine_to_fp32']:.6f} |")
    if any(row["gpu"] for row in report["results"]):
        lines += ["", "| variant | GPU batch | px/s (v1: bf16, v2: fp32) | max abs diff vs CPU fp32 |",
                  "|---|---:|---:|---:|"]
        for row in report["results"]:
            for r in row["gpu"] or []:
                lines.append(f"| {row['variant']} | {r['batch_size']} | {r['px_s']:.0f} | {r['max_abs_diff']:.2e} |")
    lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~30 s)")
    parser.add_argument("--variants", default=",".join(PLAN), help="comma-separated variant names")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch CPU threads (use 1 on a machine shared with other work: "
                             "spinning OpenMP threads on busy cores cost more than they give)")
    parser.add_argument("--out", default="bench-results", help="output folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    report = {
        "command": " ".join(["python jobs/bench_encode.py", *(sys.argv[1:] if argv is None else argv)]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "results": [],
    }
    repeats = 1 if args.quick else args.repeats
    for name in args.variants.split(","):
        n, m, batch_sizes = PLAN[name][1 if args.quick else 0]
        row = bench_variant(name, n, m, batch_sizes, repeats, cuda)
        report["results"].append(row)
        best = max(row["cpu"], key=lambda r: r["px_s"])
        print(f"{name:>9} ({row['length_groups']} length groups): baseline {row['baseline_px_s']:8.1f} px/s, "
              f"best {best['px_s']:8.1f} px/s "
              f"(batch {best['batch_size']}, {best['speedup']:.2f}x, max diff {best['max_abs_diff']:.1e})",
              flush=True)
        c = row["ceiling"]
        print(f"{'':>9} {c['flops_per_pixel'] / 1e6:.0f} MFLOP/px; loop {c['loop_gflops']:.1f} GFLOP/s, best matmul "
              f"{c['best_matmul_gflops']:.1f} GFLOP/s: fp32 batching ceiling {c['ceiling'] or 0:.2f}x", flush=True)
        print(f"{'':>9} bf16 autocast: {row['cpu_bf16']['px_s']:8.1f} px/s ({row['cpu_bf16']['speedup']:.2f}x), "
              f"min cosine to fp32 {row['cpu_bf16']['min_cosine_to_fp32']:.6f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_encode.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (out / "bench_encode.md").write_text(table)
    print()
    print(table)
    return report


if __name__ == "__main__":
    main()
