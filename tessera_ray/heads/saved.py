"""A fitted head on disk: the estimator, its class names and what it was trained for.

Heads are written with skops (``skops.io``), whose files describe scikit-learn
objects as JSON plus arrays and are rebuilt without unpickling: a file naming
any type outside the few our heads are made of is refused before anything in
it is built, so a crafted head cannot run code (``--head`` takes files from
anyone). An older pickled head is refused the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera_ray.atomic import atomic_file
from tessera_ray.errors import UserInputError
from tessera_ray.extras import require

require("heads", "saved heads")

FORMAT = "tessera-ray/head/2"
TRUSTED = ("sklearn.neural_network._stochastic_optimizers.AdamOptimizer",)
"""Types skops does not trust by default that our MLP heads hold (their optimizer state)."""


@dataclass(frozen=True, eq=False)
class Head:
    estimator: Any
    classes: list[str]
    model: str
    kind: str
    """"class" or "value"."""
    year: int


def save_head(head: Head, path: str | Path) -> Path:
    import skops.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "estimator": head.estimator, "classes": list(head.classes),
               "model": head.model, "kind": head.kind, "year": int(head.year)}
    with atomic_file(path) as tmp:
        skops.io.dump(payload, tmp)
    return path


def load_head(path: str | Path, regression: bool) -> Head:
    """Read a saved head; nothing in the file is executed (see the module docstring)."""
    import skops.io

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"head file not found: {path}")
    not_ours = f"{path} is not a head saved by tessera-ray classify --save-head"
    try:
        unknown = [t for t in skops.io.get_untrusted_types(file=path) if t not in TRUSTED]
        if unknown:
            raise UserInputError(f"{not_ours}: it names types a head never holds ({', '.join(unknown[:3])})")
        payload = skops.io.load(path, trusted=list(TRUSTED))
    except UserInputError:
        raise
    except Exception:
        raise UserInputError(not_ours) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserInputError(not_ours)
    head = Head(payload["estimator"], [str(c) for c in payload["classes"]], str(payload["model"]),
                str(payload["kind"]), int(payload["year"]))
    if (head.kind == "value") != regression:
        raise UserInputError(f"{path} is a {head.kind} head, not a {'value' if regression else 'class'} head")
    return head


def check_classes(head: Head, target: np.ndarray) -> None:
    """Labels of classes the head never saw are refused (before any embedding is read)."""
    unknown = sorted(set(map(str, target)) - set(head.classes))
    if unknown:
        raise UserInputError(
            f"labels hold classes the saved head does not know: {', '.join(unknown[:10])} "
            f"(it knows {', '.join(head.classes)})"
        )


def score(head: Head, features: np.ndarray, target: np.ndarray) -> float:
    """Accuracy of a saved head on labels of known classes."""
    check_classes(head, target)
    return float(np.mean(head.estimator.predict(features) == target))
