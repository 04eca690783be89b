"""The label-efficiency curve as CSV, and as a PNG plot where matplotlib is installed."""

from __future__ import annotations

import csv
from pathlib import Path


def write_curve(curve: list[dict], out: str | Path, title: str = "label efficiency") -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "curve.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["per_class", "accuracy", "macro_f1", "repeats"])
        writer.writeheader()
        writer.writerows(curve)
    written = [path]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["per_class"] for r in curve], [r["accuracy"] for r in curve], "o-", label="accuracy")
    ax.plot([r["per_class"] for r in curve], [r["macro_f1"] for r in curve], "s--", label="macro F1")
    ax.set(xscale="log", xlabel="labels per class", ylabel="score", title=title, ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=100)
    plt.close(fig)
    return written + [out / "curve.png"]
