"""Self-supervised training of the encoder (Barlow Twins + mix regulariser) and the demo's encoder."""

from tessera_ray.train.demo import ensure_demo_encoder
from tessera_ray.train.loop import Labelled, RunResult, TrainConfig, labelled_points, run

__all__ = ["Labelled", "RunResult", "TrainConfig", "ensure_demo_encoder", "labelled_points", "run"]
