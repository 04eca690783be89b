"""The encode-tiles job, for ``ray job submit``.

    ray job submit --working-dir . -- python jobs/encode_tiles.py /shared/tiles \\
        --checkpoint s3://bucket/models/tessera_v2_medium.pt --out /shared/embeddings

Same flags and code as ``tessera-ray encode-tiles``. Under ``ray job submit`` it
joins the cluster (``RAY_ADDRESS``) and runs the tiles on its encoder actors
(the tile folder and ``--out`` must be on a filesystem every node mounts at the
same path); started directly it starts a local Ray. Exit codes: 0 every tile is
written (or was already), 2 bad input, 4 bad data, 5 some tiles failed (the
rest are written).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tessera_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["encode-tiles", *sys.argv[1:]])
