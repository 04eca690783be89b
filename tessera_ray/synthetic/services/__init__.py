"""Loopback stand-ins for the cloud services a job talks to.

- :class:`StacServer` (:mod:`.stac_api`, searching with :mod:`.search`): a
  STAC API (Item Search with the Query and Filter extensions, paging) over a
  synthetic world's items, asset hrefs rewritten onto an HTTP server of the world.
- :class:`S3Server` (:mod:`.s3`): moto's S3 on 127.0.0.1 with bucket helpers.
- :class:`LocalServices`: the world over HTTP, STAC and S3 at once (the
  demo, ``tessera-ray services`` and the CI smoke job).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from tessera_ray.errors import UserInputError
from tessera_ray.extras import require
from tessera_ray.serve import StaticServer, check_port
from tessera_ray.synthetic.services.s3 import S3Server
from tessera_ray.synthetic.services.search import BadRequest, SearchParams
from tessera_ray.synthetic.services.stac_api import Catalogue, StacServer, stac_app

require("demo", "the local stand-in services (STAC API, S3)")

WORLD_BUCKET = "tessera-world"


class LocalServices:
    """A world over HTTP, STAC (hrefs on that HTTP server) and S3 (bucket ``tessera-world``).

    ``port_base=P`` uses ports P, P+1 and P+2; by default free ports.
    """

    def __init__(self, world_dir: str | os.PathLike[str], port_base: int | None = None) -> None:
        self.world_dir = Path(world_dir)
        if not (self.world_dir / "stac").is_dir():
            raise UserInputError(f"{world_dir} is not a synthetic world (no stac/ folder)")
        ports = [0, 0, 0] if port_base is None else [check_port(port_base + i) for i in range(3)]
        self.http = StaticServer(self.world_dir, port=ports[0])
        self._stac_port = ports[1]
        self.s3 = S3Server(port=ports[2])
        self.stac: StacServer | None = None
        self.bucket = WORLD_BUCKET
        self._stack = ExitStack()

    def __enter__(self) -> LocalServices:
        with ExitStack() as stack:
            stack.enter_context(self.http)
            self.stac = stack.enter_context(StacServer(self.world_dir, self.http.url, port=self._stac_port))
            stack.enter_context(self.s3)
            self.s3.create_bucket(self.bucket, public_read=True)
            self.s3.upload_dir(self.world_dir, self.bucket)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def urls(self) -> dict[str, str]:
        """Where each service listens (no credentials: those come from ``self.s3.env()``)."""
        assert self.stac is not None
        return {
            "http": self.http.url,
            "stac": self.stac.url,
            "s3": self.s3.endpoint_url,
            "bucket": self.bucket,
            "world": str(self.world_dir.resolve()),
        }


__all__ = ["WORLD_BUCKET", "BadRequest", "Catalogue", "LocalServices", "S3Server", "SearchParams", "StacServer",
           "stac_app"]
