"""The embed job, for ``ray job submit``.

    ray job submit --working-dir . -- python jobs/embed.py --roi W,S,E,N --year 2024 \\
        --out s3://bucket/prefix --checkpoint s3://bucket/models/tessera.pt

Same flags and code as ``tessera-ray embed``. Under ``ray job submit`` it joins
the cluster (``RAY_ADDRESS``); started directly it starts a local Ray.
Exit codes: 0 everything asked for is published, 2 bad input, 3 a service
failed, 4 bad data, 5 some units failed (the rest is published).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tessera_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["embed", *sys.argv[1:]])
