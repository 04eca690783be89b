"""Credentials written inside URLs never reach a user's terminal, a run record or an output file."""

from __future__ import annotations

import json
import socket

import pytest
from cli_helpers import run_cli as run

from tessera_ray.grid import Unit
from tessera_ray.redact import redact

SECRETS = ("hunter2pw", "tok3nvalue", "s1gnatureXYZ", "AKIAcredential", "FQoGsessiontok", "SASsig%3D")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_clean(*texts):
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, text


@pytest.mark.parametrize("url", [
    "https://b.s3.amazonaws.com/k.pt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAcredential%2F20240101"
    "&X-Amz-Security-Token=FQoGsessiontok&X-Amz-Signature=s1gnatureXYZ",
    "https://acct.blob.core.windows.net/c/k.pt?sv=2022-11-02&se=2030-01-01&sr=b&sp=r&sig=SASsig%3D",
    "https://user:hunter2pw@host.example/k.pt?token=tok3nvalue&page=2",
    "error on url: /k.pt?access_token=tok3nvalue",
])
def test_redact_masks_credentials_and_keeps_the_rest(url):
    out = redact(f"cannot read {url}: timed out")
    assert_clean(out)
    assert out.startswith("cannot read ") and out.endswith(": timed out") and "k.pt" in out


def test_secret_urls_never_appear_in_errors(tmp_path, capsys):
    port = closed_port()
    points = tmp_path / "p.csv"
    points.write_text("lon,lat\n3.0,-7.45\n")
    out = tmp_path / "o.parquet"
    root = f"http://user:hunter2pw@127.0.0.1:{port}/root?token=tok3nvalue"
    code, stdout, err = run(
        ["sample", "--root", root, "--points", str(points), "--year", "2024", "--out", str(out)], capsys
    )
    assert code == 3 and "cannot reach http://***@127.0.0.1" in err, err
    assert_clean(stdout, err)
    checkpoint = (f"http://user:hunter2pw@127.0.0.1:{port}/c.pt?X-Amz-Credential=AKIAcredential"
                  "&X-Amz-Security-Token=FQoGsessiontok&X-Amz-Signature=s1gnatureXYZ")
    code, stdout, err = run(["embed", "--roi", "3.0,-7.45,3.01,-7.44", "--year", "2024", "--out", str(tmp_path / "e"),
                             "--checkpoint", checkpoint, "--stac", f"http://127.0.0.1:{port}/stac?token=tok3nvalue"],
                            capsys)
    assert code != 0 and err.count("\n") == 1 and "127.0.0.1" in err, err
    assert_clean(stdout, err)
    code, stdout, err = run(["export", "--root", root, "--bbox", "3.0,-7.45,3.01,-7.44", "--year", "abc",
                             "--out", str(tmp_path / "x.tif")], capsys)
    assert code == 2
    assert_clean(stdout, err)
    assert not list(tmp_path.glob("*.parquet")) and not (tmp_path / "e").exists()


def test_export_over_a_url_with_credentials_writes_none_into_the_cog(tmp_path, capsys):
    import rasterio

    from tessera_ray.serve import StaticServer
    from tessera_ray.store.testing import build_random_store

    unit = Unit(31, 4000, 160, 256)
    build_random_store(str(tmp_path / "r"), [unit], partial=False)
    cx, cy = unit.polygon_lonlat().centroid.coords[0]
    bbox = ",".join(map(str, (cx - 0.002, cy - 0.002, cx + 0.002, cy + 0.002)))
    out = tmp_path / "o.tif"
    with StaticServer(tmp_path / "r") as server:  # it ignores the credentials; a real server would check them
        url = server.url.replace("http://", "http://user:hunter2pw@")
        code, stdout, err = run(["export", "--root", url, "--bbox", bbox, "--year", "2024", "--out", str(out)], capsys)
    assert code == 0, err
    assert_clean(stdout, err)
    with rasterio.open(out) as src:
        tags = json.dumps(src.tags())
    assert "127.0.0.1" in tags  # the source is recorded, without its credentials
    assert_clean(tags)


def test_run_record_and_progress_hold_no_credentials(capsys):
    import io

    from tessera_ray.pipeline.embed import RunResult, YearResult, run_record, summary
    from tessera_ray.pipeline.plan import EmbedConfig, ModelInfo, YearPlan
    from tessera_ray.pipeline.progress import Progress

    signed = "https://b.s3.amazonaws.com/s2/B04.tif?X-Amz-Credential=AKIAcredential&X-Amz-Signature=s1gnatureXYZ"
    config = EmbedConfig(roi="3,-7.45,3.01,-7.44", years=(2024,), out="s3://bucket/out",
                         checkpoint="https://user:hunter2pw@models.example/c.pt?token=tok3nvalue",
                         stac="https://stac.example/v1?token=tok3nvalue")
    year = YearResult(2024, units=2, done=1, failed={"utm31_256_4000_0160": f"cannot read {signed}: HTTP 403"},
                      unreadable_scenes={signed})
    result = RunResult("run-1", [year])
    record = json.dumps(run_record(config, ModelInfo("tiny", "0" * 64), result, year, YearPlan(2024, (), ())))
    assert "models.example/c.pt" in record and "B04.tif" in record
    assert_clean(record, summary(result))
    stream = io.StringIO()
    progress = Progress(stream, rich=False)
    progress.start("2024", 2)
    progress.unit_failed("utm31_256_4000_0160", f"cannot read {signed}")
    assert "FAILED" in stream.getvalue()
    assert_clean(stream.getvalue())
