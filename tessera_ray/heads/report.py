"""The label-efficiency curve as CSV and as a PNG plot."""

from __future__ import annotations

import csv
from pathlib import Path


def write_curve(curve: list[dict], out: str | Path, title: str = "label efficiency") -> list[Path]:
    """``out/curve.csv`` (one row per labels-per-class step) and ``out/curve.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "curve.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["per_class", "accuracy", "macro_f1", "repeats"])
        writer.writeheader()
        writer.writerows(curve)
    png = out / "curve.png"
    plot_curves({"accuracy": curve}, png, title, metrics=("accuracy", "macro_f1"))
    return [path, png]


def plot_curves(curves: dict[str, list[dict]], png: str | Path, title: str,
                metrics: tuple[str, ...] = ("accuracy",)) -> Path:
    """Score against labels per class (log axis), one line per curve and metric."""
    from tessera_ray.extras import require

    require("heads", "plotting the label-efficiency curve")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, curve in curves.items():
        ks = [r["per_class"] for r in curve]
        for metric, style in zip(metrics, ("o-", "s--")):
            what = metric.replace("_", " ")
            label = what if len(curves) == 1 else name if len(metrics) == 1 else f"{name} ({what})"
            ax.plot(ks, [r[metric] for r in curve], style, label=label)
    ax.set(xscale="log", xlabel="labels per class", ylabel="score", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
