"""moto's S3 server on loopback: start, stop, credentials and bucket helpers.

moto keeps its buckets in this process's memory; :meth:`S3Server.upload_dir`
uses that to load a world without a PUT per file. It sets up its own
server's buckets with boto3 directly, an exception to the one object-store
stack (docs/architecture.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tessera_ray.errors import ServiceError
from tessera_ray.serve import check_port, media_type

_DUMMY_KEY_ID = "tessera-local"
_DUMMY_SECRET = "tessera-local-secret"  # moto accepts any; nothing real lives here
_REGION = "us-east-1"


class S3Server:
    """moto's S3 on loopback, for the object-store code paths.

    moto keeps its buckets in this process's memory, shared with any
    ``moto.mock_aws`` in the same process (which resets them on start).
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = check_port(port)
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> S3Server:
        import logging

        from moto.server import ThreadedMotoServer

        # werkzeug logs every request line on stderr; keep the CLI's output clean
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        if self.port:
            _check_free(self.host, self.port)  # moto would wait forever on a busy port
        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"S3Server({self.endpoint_url})"

    def env(self) -> dict[str, str]:
        """Environment for boto3/s3fs (``AWS_ENDPOINT_URL*``) and GDAL's /vsis3/ (``AWS_S3_ENDPOINT``)."""
        return {
            "AWS_ACCESS_KEY_ID": _DUMMY_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": _DUMMY_SECRET,
            "AWS_DEFAULT_REGION": _REGION,
            "AWS_REGION": _REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_S3_ENDPOINT": f"{self.host}:{self.port}",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
        }

    def client(self) -> Any:
        """A boto3 S3 client of this server, with its local credentials."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=_REGION,
            aws_access_key_id=_DUMMY_KEY_ID,
            aws_secret_access_key=_DUMMY_SECRET,
        )

    def create_bucket(self, name: str, public_read: bool = False) -> None:
        """Create ``name``; with ``public_read`` anyone may GetObject (as a public dataset bucket)."""
        s3 = self.client()
        s3.create_bucket(Bucket=name)
        if public_read:
            policy = {
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "PublicRead",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{name}/*"],
                }],
            }
            s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))

    def upload_dir(self, local_dir: str | os.PathLike[str], bucket: str, prefix: str = "") -> int:
        """Put every file under ``local_dir`` at ``s3://bucket/prefix/...``; return the count.

        The objects go straight into moto's in-process store, not through
        PUT requests: a PUT costs ~10 ms here, 80 s for the test world's
        9,300 files, against ~0.2 ms per file this way. Reads still go
        through the server like any client's.
        """
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        store = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        if bucket not in store.buckets:
            raise ServiceError(f"no bucket {bucket!r} on {self.endpoint_url}")
        root = Path(local_dir)
        count = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = "/".join(filter(None, [prefix.strip("/"), path.relative_to(root).as_posix()]))
            obj = store.put_object(bucket, key, path.read_bytes())
            obj.set_metadata({"Content-Type": media_type(path)})
            count += 1
        return count


def _check_free(host: str, port: int) -> None:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
