"""The same spec on s3:// through s3fs, against moto's S3 server on loopback (a real HTTP endpoint)."""

import pytest

from pipelines.data.reading import read_split
from pipelines.data.sources import DataError, open_source
from pipelines.data.spec import load_spec, parse_spec

from test_ingest import collect


def upload(endpoint, local_dir, bucket, prefix):
    """The part-*.parquet files of ``local_dir`` into a new ``bucket`` under ``prefix``."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    for p in sorted(local_dir.glob("part-*.parquet")):
        s3.upload_file(str(p), bucket, f"{prefix}/{p.name}")


@pytest.mark.fast
def test_reads_through_s3fs(generated, s3_endpoint, s3_env):
    upload(s3_endpoint, generated, "ctr", "gen")
    spec = parse_spec(
        {**load_spec(generated / "spec.yaml").model_dump(), "location": "s3://ctr/gen", "s3": {"endpoint_url": s3_endpoint}}
    )
    src = open_source(spec)
    assert len(src.files) == 4 and sum(src.rows) == 12_000
    out = collect(read_split(src, "all", None))
    assert len(out["label"]) == 12_000


def test_wrong_credentials_and_missing_bucket_are_one_line(generated, s3_endpoint, s3_env, monkeypatch):
    from moto.core.authorization import enable_iam_authentication

    upload(s3_endpoint, generated, "ctr2", "gen")
    spec = parse_spec(
        {**load_spec(generated / "spec.yaml").model_dump(), "location": "s3://ctr2/gen", "s3": {"endpoint_url": s3_endpoint}}
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with enable_iam_authentication():  # the server now checks keys, and this one is unknown
        with pytest.raises(DataError) as err:
            open_source(spec)
    msg = str(err.value)
    assert msg.startswith("s3://ctr2/gen: access denied") and "\n" not in msg
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    missing = parse_spec({**spec.model_dump(), "location": "s3://no-such-bucket/x"})
    with pytest.raises(DataError) as err:
        open_source(missing)
    assert str(err.value) == "s3://no-such-bucket/x: no such file or directory"


@pytest.mark.slow
def test_training_job_writes_checkpoints_and_metrics_to_s3(generated, s3_endpoint, s3_env, ray_local):
    import json

    import boto3

    from pipelines.data.sources import s3_filesystem
    from pipelines.train.job_flags import parse_job_args as parse_args
    from pipelines.train.driver import run

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="runs")
    spec = parse_args(["--data", str(generated / "spec.yaml"), "--workers", "2", "--epochs", "1", "--batch-size", "512",
                       "--hidden-units", "16", "--out", "s3://runs/ctr", "--storage-endpoint", s3_endpoint, "--name", "r"])
    final = run(spec, log=lambda s: None)
    fs = s3_filesystem(s3_endpoint)
    saved = json.loads(fs.cat("runs/ctr/r/metrics.json"))
    assert saved["test"]["rows"] == final["test"]["rows"] > 0
    assert final["best_checkpoint"].startswith("s3://runs/ctr/r/checkpoint_")
    assert fs.exists(final["best_checkpoint"].removeprefix("s3://") + "/state.pt")
    assert not [p for p in fs.find("runs/ctr/r") if p.endswith(".tmp")]


def test_an_s3_out_that_cannot_be_written_is_one_line_before_training(s3_endpoint, s3_env):
    """--out on S3 is probed (a small object written and removed) before Ray starts: a missing
    bucket and an endpoint nobody listens on are one line each."""
    import socket
    import time

    from adasparse.config import ConfigError
    from pipelines.runtime.output_location import OutputLocation

    with pytest.raises(ConfigError) as err:
        OutputLocation.of("s3://no-such-bucket/runs", s3_endpoint).check_writable()
    assert str(err.value).startswith("--out s3://no-such-bucket/runs: cannot write there: ") and "\n" not in str(err.value)
    with socket.socket() as s:  # a loopback port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^--out s3://ctr/runs: cannot write there: Could not connect to the endpoint URL"):
        OutputLocation.of("s3://ctr/runs", dead).check_writable()
    assert time.perf_counter() - t0 < 60
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="writable")
    OutputLocation.of("s3://writable/runs", s3_endpoint).check_writable()  # a writable one passes, leaving nothing
    listed = s3.list_objects_v2(Bucket="writable")
    assert listed.get("KeyCount", 0) == 0
