"""Which S3 client stack for tessera-ray: boto3, s3fs (fsspec) or obstore, on the operations we do.

Against moto's S3 on loopback, in its own process (so the server does not
share the client's interpreter):

* ranged GET: 64 KiB ranges of a 16 MiB object, one at a time and from 8 threads
  (the client's shard-index and chunk reads);
* conditional PUT: 256 KiB objects with If-None-Match: * (publication's
  "create only if absent"), and whether a second PUT of the same key is refused;
* list: 2,000 keys under a prefix (finding part records).

Figures are medians of --repeats runs; moto's own cost is in every number, so
they compare the clients, not S3. Prints a table and saves JSON under
bench-results/.

    python jobs/bench_s3.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUCKET = "bench"
BIG = 16 * 2**20
RANGE = 64 * 2**10
N_RANGES = 200
N_PUTS = 100
PUT_SIZE = 256 * 2**10
N_KEYS = 2000


def start_moto() -> tuple[subprocess.Popen, dict]:
    code = ("import sys, time\n"
            "from tessera_ray.synthetic.services import S3Server\n"
            "s = S3Server().start(); s.create_bucket(sys.argv[1])\n"
            "import json; print(json.dumps(s.env()), flush=True)\n"
            "time.sleep(1e6)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, BUCKET], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    return proc, json.loads(proc.stdout.readline())


class Boto3:
    name = "boto3"

    def __init__(self, env):
        import boto3
        from botocore.config import Config

        self.c = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              config=Config(max_pool_connections=16))

    def put(self, key, data, create_only=False):
        from botocore.exceptions import ClientError

        try:
            self.c.put_object(Bucket=BUCKET, Key=key, Body=data, **({"IfNoneMatch": "*"} if create_only else {}))
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def get_range(self, key, start, length):
        return self.c.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={start}-{start + length - 1}")["Body"].read()

    def list(self, prefix):
        keys = []
        for page in self.c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys


class S3fs:
    name = "s3fs"

    def __init__(self, env):
        import s3fs

        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, endpoint_url=env["AWS_ENDPOINT_URL"])

    def put(self, key, data, create_only=False):
        if create_only:
            return None  # no If-None-Match in s3fs's API
        self.fs.pipe_file(f"{BUCKET}/{key}", data)
        return True

    def get_range(self, key, start, length):
        return self.fs.cat_file(f"{BUCKET}/{key}", start=start, end=start + length)

    def list(self, prefix):
        self.fs.invalidate_cache()
        return self.fs.find(f"{BUCKET}/{prefix}")


class Obstore:
    name = "obstore"

    def __init__(self, env):
        import obstore
        from obstore.store import S3Store

        self.obstore = obstore
        self.s = S3Store(BUCKET, endpoint=env["AWS_ENDPOINT_URL"], region="us-east-1", skip_signature=False,
                         access_key_id=env["AWS_ACCESS_KEY_ID"], secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                         client_options={"allow_http": True})

    def put(self, key, data, create_only=False):
        try:
            self.obstore.put(self.s, key, data, mode="create" if create_only else "overwrite")
            return True
        except Exception as exc:  # obstore.exceptions.AlreadyExistsError
            if "AlreadyExists" in type(exc).__name__ or "Precondition" in str(exc):
                return False
            raise

    def get_range(self, key, start, length):
        return bytes(self.obstore.get_range(self.s, key, start=start, length=length))

    def list(self, prefix):
        return [o["path"] for batch in self.obstore.list(self.s, prefix=prefix) for o in batch]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(client, big_key: str, run: int) -> dict:
    offsets = [(i * 7919 * RANGE) % (BIG - RANGE) for i in range(N_RANGES)]
    expected = client.get_range(big_key, offsets[0], RANGE)
    assert len(expected) == RANGE
    seq = timed(lambda: [client.get_range(big_key, o, RANGE) for o in offsets])
    with ThreadPoolExecutor(8) as pool:
        par = timed(lambda: list(pool.map(lambda o: client.get_range(big_key, o, RANGE), offsets)))
    data = os.urandom(PUT_SIZE)
    prefix = f"{client.name}/{run}/puts/"
    conditional = client.put(prefix + "probe", data, create_only=True)
    refused = None if conditional is None else client.put(prefix + "probe", data, create_only=True) is False
    put = timed(lambda: [client.put(f"{prefix}{i}", data, create_only=conditional is not None)
                         for i in range(N_PUTS)])
    listed = timed(lambda: client.list("keys/"))
    return {"range_get_ms": 1e3 * seq / N_RANGES, "range_get_8threads_per_s": N_RANGES / par,
            "put_ms": 1e3 * put / N_PUTS, "conditional_put": conditional is not None, "refuses_second_create": refused,
            "list_2000_s": listed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench-results" / "s3_clients.json"))
    args = parser.parse_args()
    proc, env = start_moto()
    os.environ.update(env)  # credentials and endpoint for every client, as a job would have them
    try:
        setup = Boto3(env)
        setup.put("big.bin", os.urandom(BIG))
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: setup.put(f"keys/{i:05d}", b"x"), range(N_KEYS)))
        rows = {}
        for cls in (Boto3, S3fs, Obstore):
            client = cls(env)
            runs = [measure(client, "big.bin", r) for r in range(args.repeats)]
            assert all(len(client.list("keys/")) == N_KEYS for _ in range(1))
            rows[cls.name] = {
                k: (statistics.median(r[k] for r in runs) if isinstance(runs[0][k], float) else runs[0][k])
                for k in runs[0]
            }
    finally:
        proc.kill()
    print(f"{'client':8} {'range GET ms':>12} {'8-thread GET/s':>15} {'PUT 256K ms':>12} {'If-None-Match':>14} "
          f"{'list 2000 s':>11}")
    for name, r in rows.items():
        cond = "yes" if r["conditional_put"] and r["refuses_second_create"] else "no"
        print(f"{name:8} {r['range_get_ms']:12.2f} {r['range_get_8threads_per_s']:15.0f} {r['put_ms']:12.2f} "
              f"{cond:>14} {r['list_2000_s']:11.3f}")
    record = {"machine": platform.platform(), "cpus": os.cpu_count(), "repeats": args.repeats, "clients": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
