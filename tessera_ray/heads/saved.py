"""A fitted head on disk: the estimator, its class names and what it was trained for."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tessera_ray.errors import UserInputError

FORMAT = "tessera-ray/head/1"


@dataclass(frozen=True, eq=False)
class Head:
    estimator: object
    classes: list[str]
    model: str
    kind: str
    """"class" or "value"."""
    year: int


def save_head(head: Head, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("wb") as fh:
        pickle.dump({"format": FORMAT, "head": head}, fh)
    os.replace(tmp, path)
    return path


def load_head(path: str | Path, regression: bool) -> Head:
    """Read a saved head (a pickle: only load files you wrote)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"head file not found: {path}")
    try:
        with path.open("rb") as fh:
            payload = pickle.load(fh)
    except Exception:
        raise UserInputError(f"{path} is not a head saved by tessera-ray classify --save-head") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserInputError(f"{path} is not a head saved by tessera-ray classify --save-head")
    head = payload["head"]
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
