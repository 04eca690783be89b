"""Train the encoder on ingested unit folders with Ray Train (the job behind ``tessera-ray train``).

    python jobs/train.py --units DIR --out DIR [--variant small] [--steps 1000] [--workers 4 --gpu]
        [--labels labels.parquet --eval-every 200]

Every option of ``tessera-ray train`` is accepted; see ``tessera-ray train --help``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tessera_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
