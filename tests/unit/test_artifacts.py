"""The artifact store (airflow_retrain.artifacts) on file:// and on S3 (a moto server over real HTTP)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from airflow_retrain import artifacts
from airflow_retrain.artifacts import ArtifactNotFound, ArtifactStore, artifact_path, to_uri

BUCKET = "retrain-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_conn(moto_endpoint, monkeypatch):
    """An Airflow AWS connection (from the environment, as a deployment defines it) pointing at moto."""
    import boto3

    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"region_name": "us-east-1", "endpoint_url": moto_endpoint},
    }
    monkeypatch.setenv("AIRFLOW_CONN_RETRAIN_S3_TEST", json.dumps(conn))
    client = boto3.client(
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    try:
        client.create_bucket(Bucket=BUCKET)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return "retrain_s3_test", client


def _local_tree(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.json").write_text('{"trees": 3}')
    (folder / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 40)
    return folder


# --- resolution -------------------------------------------------------------------------------


def test_default_root_is_the_state_dir(state_dir, monkeypatch):
    monkeypatch.delenv(artifacts.ARTIFACT_ROOT_ENV, raising=False)
    store = ArtifactStore.resolve()
    assert store == ArtifactStore((state_dir / "artifacts").as_uri(), None)
    assert to_uri(store.run_path("d", "k")) == (state_dir / "artifacts" / "d" / "k").as_uri()


def test_spec_wins_over_deployment(monkeypatch):
    monkeypatch.setenv(artifacts.ARTIFACT_ROOT_ENV, "s3://deploy-bucket/prefix/")
    monkeypatch.setenv(artifacts.ARTIFACT_CONN_ENV, "aws_deploy")
    assert ArtifactStore.resolve() == ArtifactStore("s3://deploy-bucket/prefix", "aws_deploy")
    assert ArtifactStore.resolve("gs://spec-bucket/x") == ArtifactStore("gs://spec-bucket/x", "google_cloud_default")
    assert ArtifactStore.resolve("s3://spec-bucket", "aws_spec") == ArtifactStore("s3://spec-bucket", "aws_spec")
    with pytest.raises(ValueError, match="bucket"):  # S3 bucket rules: 3 to 63 characters
        ArtifactStore.resolve("s3://b", "aws_spec")
    monkeypatch.delenv(artifacts.ARTIFACT_CONN_ENV)
    assert ArtifactStore.resolve() == ArtifactStore("s3://deploy-bucket/prefix", "aws_default")


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("/srv/artifacts", "must be a URI with one of the schemes"),
        ("hdfs://nn/x", "must be a URI with one of the schemes"),
        ("file://relative/path", "needs an absolute path"),
        ("s3://", "no bucket"),
        ("s3://aws_default@bucket/x", "name the connection in connection_id"),
    ],
)
def test_bad_roots_name_their_source(monkeypatch, root, message):
    with pytest.raises(ValueError, match=f"artifacts.root: .*{message}"):
        ArtifactStore.resolve(root)
    monkeypatch.setenv(artifacts.ARTIFACT_ROOT_ENV, root)
    with pytest.raises(ValueError, match=f"{artifacts.ARTIFACT_ROOT_ENV}: .*{message}"):
        ArtifactStore.resolve()


# --- file:// ----------------------------------------------------------------------------------


def test_file_store_round_trip(tmp_path):
    root = tmp_path / "my store"  # URIs are not percent-encoded: ObjectStoragePath takes paths as written
    store = ArtifactStore.resolve(artifacts.file_uri(root))
    run = store.run_path("churn_retrain", "abc123")
    source = _local_tree(tmp_path)

    uri = artifacts.upload(source, run / "training" / "job-1" / "model")
    assert uri == f"file://{root}/churn_retrain/abc123/training/job-1/model"
    assert (root / "churn_retrain" / "abc123" / "training" / "job-1" / "model" / "model.json").is_file()
    local = artifacts.download(store.path(uri), tmp_path / "copy")
    assert (local / "model.json").read_text() == '{"trees": 3}'
    assert (local / "sub" / "weights.bin").read_bytes() == (source / "sub" / "weights.bin").read_bytes()
    single = artifacts.download(store.path(uri) / "model.json", tmp_path / "one")
    assert single == tmp_path / "one" / "model.json"

    json_uri = artifacts.write_json(run / "report.json", {"ok": True, "n": 1})
    assert artifacts.read_json(store.path(json_uri)) == {"ok": True, "n": 1}
    with pytest.raises(ValueError):
        artifacts.write_json(run / "bad.json", {"x": float("nan")})  # strict JSON, as the script writes it

    assert artifacts.delete(run / "training") is True
    assert artifacts.delete(run / "training") is False
    assert not artifacts.exists(uri) and artifacts.exists(json_uri)
    with pytest.raises(ArtifactNotFound, match=f"{uri} does not exist"):
        artifacts.download(store.path(uri), tmp_path / "again")
    with pytest.raises(ArtifactNotFound, match="nothing.json does not exist"):
        artifacts.read_json(run / "nothing.json")


# --- s3:// through an Airflow connection, against moto over HTTP --------------------------------


def test_s3_store_round_trip(s3_conn, tmp_path):
    conn_id, client = s3_conn
    store = ArtifactStore.resolve(f"s3://{BUCKET}/teams/ml", conn_id)
    run = store.run_path("churn_retrain", "abc123")
    assert to_uri(run) == f"s3://{BUCKET}/teams/ml/churn_retrain/abc123"  # no conn@ in URIs handed on

    source = _local_tree(tmp_path)
    uri = artifacts.upload(source, run / "training" / "job-1" / "model")
    assert uri == f"s3://{BUCKET}/teams/ml/churn_retrain/abc123/training/job-1/model"
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="teams/ml/")["Contents"])
    assert keys == [
        "teams/ml/churn_retrain/abc123/training/job-1/model/model.json",
        "teams/ml/churn_retrain/abc123/training/job-1/model/sub/weights.bin",
    ]
    single = artifacts.upload(source / "model.json", run / "dataset" / "train" / "part-0.parquet")
    assert single == f"s3://{BUCKET}/teams/ml/churn_retrain/abc123/dataset/train/part-0.parquet"

    assert artifacts.exists(store.path(uri)) and artifacts.exists(store.path(uri) / "model.json")
    assert not artifacts.exists(store.path(uri) / "missing.json")
    local = artifacts.download(store.path(uri), tmp_path / "copy")
    assert (local / "model.json").read_text() == '{"trees": 3}'
    assert (local / "sub" / "weights.bin").read_bytes() == (source / "sub" / "weights.bin").read_bytes()

    json_uri = artifacts.write_json(run / "report.json", {"decision": "promoted"})
    assert artifacts.read_json(store.path(json_uri)) == {"decision": "promoted"}
    with store.path(uri).joinpath("sub", "weights.bin").open("rb") as fh:  # ranged reads
        fh.seek(256)
        assert fh.read(4) == bytes([0, 1, 2, 3])

    assert artifacts.delete(run / "training") is True
    assert not artifacts.exists(store.path(uri))
    assert artifacts.exists(store.path(json_uri))  # a sibling prefix is untouched
    with pytest.raises(ArtifactNotFound, match=f"{uri} does not exist"):
        artifacts.download(store.path(uri), tmp_path / "gone")
    with pytest.raises(ArtifactNotFound):
        artifacts.read_json(run / "nothing.json")


def test_s3_missing_bucket_is_an_error(s3_conn, tmp_path):
    conn_id, _ = s3_conn
    path = artifact_path("s3://no-such-bucket-here/x", conn_id)
    assert not path.exists()
    with pytest.raises(Exception, match="NoSuchBucket|does not exist"):
        artifacts.upload(_local_tree(tmp_path), path / "model")


def test_local_backend_publishes_to_s3(s3_conn, tmp_path):
    """The local backend stages s3:// channels and publishes outputs to s3:// like a cloud backend."""
    import textwrap

    from helpers import wait_for

    from airflow_retrain.training.base import JobState, TrainingJobRequest
    from airflow_retrain.training.local import LocalTrainingBackend

    conn_id, client = s3_conn
    store = ArtifactStore.resolve(f"s3://{BUCKET}/local-backend", conn_id)
    run = store.run_path("d", "k")
    data = tmp_path / "data"
    data.mkdir()
    (data / "part-0.parquet").write_text("1,2\n")
    channel = artifacts.upload(data, run / "dataset" / "train")
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import json, os, pathlib
        rows = (pathlib.Path(os.environ["SM_CHANNEL_TRAIN"]) / "part-0.parquet").read_text()
        pathlib.Path(os.environ["SM_MODEL_DIR"], "model.json").write_text(json.dumps({"rows": rows}))
        pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.json").write_text('{"metrics": {"auc": 0.7}}')
    """))
    backend = LocalTrainingBackend(jobs_dir=tmp_path / "jobs")
    request = TrainingJobRequest(
        job_name="s3-1", entry_point=str(script), channels={"train": channel}, artifact_conn_id=conn_id
    )
    backend.submit(request)
    wait_for(lambda: backend.describe("s3-1").state.terminal, timeout=30)
    assert backend.describe("s3-1").state == JobState.COMPLETED
    outputs = backend.fetch_outputs("s3-1", run / "training" / "s3-1")
    assert outputs.model_uri == f"s3://{BUCKET}/local-backend/d/k/training/s3-1/model"
    assert artifacts.read_json(store.path(outputs.metrics_uri)) == {"metrics": {"auc": 0.7}}
    assert artifacts.read_json(store.path(outputs.model_uri) / "model.json") == {"rows": "1,2\n"}


def test_s3_goes_through_the_providers_s3fs_with_the_connections_endpoint(s3_conn):
    """``s3://`` is the Amazon provider's s3fs filesystem, built from the connection (its endpoint_url
    reaches s3fs); nothing of the package is written into Airflow's cache of stores."""
    from s3fs import S3FileSystem

    conn_id, client = s3_conn
    fs = artifact_path(f"s3://{BUCKET}/x", conn_id).fs
    assert isinstance(fs, S3FileSystem)
    assert fs.endpoint_url == client.meta.endpoint_url


def test_the_package_writes_nothing_into_airflows_store_cache():
    """Stores come from Airflow's own ``get_fs`` per connection: no module attaches or swaps a filesystem."""
    package = Path(artifacts.__file__).resolve().parent
    offenders = [
        f"{path.relative_to(package)}: {pattern}"
        for path in package.rglob("*.py")
        for pattern in (r"_STORE_CACHE", r"(?<![\w.])attach\(", r"\.fs = ")
        if re.search(pattern, path.read_text())
    ]
    assert offenders == []
