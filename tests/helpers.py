"""Helpers shared by the tests that drive real subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The execution role ``connect_fake_cloud`` creates by default, and the job script SageMaker tests run.
FAKE_ROLE_ARN = "arn:aws:iam::123456789012:role/retrain"
SAGEMAKER_JOB_SCRIPT = ROOT / "tests" / "fixtures" / "sagemaker_job.py"


def write_spec(folder: Path, data: dict | str, name: str = "p.yaml") -> Path:
    """A pipeline spec file ``folder/name``: ``data`` as YAML, or a string as it is."""
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def load_problems(path: Path) -> str:
    """The message of the ``SpecError`` that loading the spec at ``path`` raises (the test fails if it loads)."""
    from airflow_retrain.spec import SpecError, load_spec

    with pytest.raises(SpecError) as e:
        load_spec(path)
    return str(e.value)


def spec_problems(folder: Path, data: dict) -> str:
    """:func:`load_problems` of ``data`` written as a spec into ``folder``."""
    return load_problems(write_spec(folder, data))


# Every wait in the tests is an upper bound on something that takes far less on a quiet machine. A loaded
# CI machine (2 cores shared by 2 test workers, the services, subprocess DAG runs) stretches them, so each
# bound is multiplied by RETRAIN_TEST_WAIT_SCALE (default 3; 1 gives the written bounds). A passing test
# waits no longer for it; only a failing one takes longer to say so.
WAIT_SCALE = float(os.environ.get("RETRAIN_TEST_WAIT_SCALE") or 3)


def bound(seconds: float) -> float:
    """A test's upper bound on a wait, ``seconds`` scaled by ``WAIT_SCALE``."""
    return seconds * WAIT_SCALE


class Clock:
    """An injectable clock (the sweep's, the inventories'): ``now`` stays where it is put until moved."""

    def __init__(self, start: float | None = None):
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run_together(sweepers: list) -> list:
    """``sweeper.run()`` of each, in threads released at the same moment; their results, in order."""
    barrier = threading.Barrier(len(sweepers))
    results: list = [None] * len(sweepers)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = sweepers[i].run()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sweepers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(bound(60))
    return results


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``bound(timeout)`` seconds."""
    timeout = bound(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def require_service(var: str, hint: str = "scripts/services.sh start provides it") -> str:
    """The URL of a test service that ``scripts/services.sh start`` exported in ``var``. Without it the test
    skips locally and fails where services are required (``RETRAIN_REQUIRE_SERVICES=1``, as in CI)."""
    value = os.environ.get(var)
    if not value:
        if os.environ.get("RETRAIN_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{var} is not set: start the services with scripts/services.sh start")
        pytest.skip(f"{var} not set ({hint})")
    return value


def connect_fake_cloud(cloud, setenv, bucket: str, conn_id: str, role: str = "retrain") -> str:
    """Give the (reset) fake cloud ``bucket`` and the execution role ``role``, count no call before the
    test's own, and point the Airflow connection ``conn_id`` at it through ``setenv`` (a MonkeyPatch's).
    Returns the role's ARN."""
    role_arn = cloud.bootstrap(bucket, role)
    cloud.reset_calls()
    for key, value in cloud.airflow_env(conn_id).items():
        setenv(key, value)
    return role_arn


@contextlib.contextmanager
def connected_fake_vertex(gcs_root: Path, conn_id: str, project: str, **config) -> Iterator:
    """The fake Vertex AI (``config``: its :class:`FakeVertexConfig` fields) with ``AIRFLOW_CONN_<conn_id>``
    pointing at it for ``project``; the connection is removed and the fake stopped on exit."""
    from fakes import fake_vertex

    server = fake_vertex.start_fake_vertex(gcs_root=gcs_root, config=config)
    var = f"AIRFLOW_CONN_{conn_id.upper()}"
    os.environ[var] = json.dumps(fake_vertex.connection(server, project))
    try:
        yield server
    finally:
        os.environ.pop(var, None)
        server.stop()


def stage_sagemaker_job(tmp_path: Path) -> Path:
    """``SAGEMAKER_JOB_SCRIPT`` as ``<tmp_path>/src/train.py`` beside a one-file channel ``<tmp_path>/data``:
    the script's path."""
    (tmp_path / "src").mkdir()
    path = tmp_path / "src" / "train.py"
    shutil.copy(SAGEMAKER_JOB_SCRIPT, path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.parquet").write_bytes(b"PAR1")
    return path


def stop_running_jobs(backend) -> None:
    """Never leave a job running behind a failed test."""
    for job in backend.find_jobs({}):
        if not job.state.terminal:
            backend.stop(job.job_name, grace_seconds=2)


def token_pids(token: str) -> list[int]:
    """Running processes, other than this one, whose environment carries a job's token (zombies have exited:
    not counted). ``token`` is ``RETRAIN_JOB_TOKEN``'s value, or a whole ``NAME=value`` marker."""
    marker = (token if "=" in token else f"RETRAIN_JOB_TOKEN={token}").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0") and alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone: it has exited and only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@contextlib.contextmanager
def tasks_on_separate_workers(base: Path) -> Iterator[list[dict]]:
    """While open, each task that ``dag.test()`` runs gets a fresh working directory, local scratch
    (``RETRAIN_SCRATCH``) and temp dir (``TMPDIR``) under ``base``, all deleted when the task ends. Yields
    the list of workers used (``task_id``, ``tmp``, ``scratch``), in the order the tasks ran."""
    from airflow.sdk.execution_time import task_runner

    execute_task = task_runner._execute_task
    workers: list[dict] = []

    def as_own_worker(context, ti, log):
        worker = base / "workers" / f"{len(workers):02d}-{ti.task_id}"
        folders = {name: worker / name for name in ("cwd", "scratch", "tmp")}
        for folder in folders.values():
            folder.mkdir(parents=True)
        saved = (os.getcwd(), {k: os.environ.get(k) for k in ("TMPDIR", "RETRAIN_SCRATCH")}, tempfile.tempdir)
        os.chdir(folders["cwd"])
        os.environ["TMPDIR"] = str(folders["tmp"])
        os.environ["RETRAIN_SCRATCH"] = str(folders["scratch"])
        tempfile.tempdir = None  # re-read TMPDIR
        workers.append({"task_id": ti.task_id, "tmp": str(folders["tmp"]), "scratch": str(folders["scratch"])})
        try:
            return execute_task(context=context, ti=ti, log=log)
        finally:
            cwd, env, tempdir = saved
            os.chdir(cwd)
            for key, value in env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            tempfile.tempdir = tempdir
            shutil.rmtree(worker)  # the worker is gone: nothing it kept locally can be read later

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_runner, "_execute_task", as_own_worker)
        yield workers


# --- A SageMaker estate on the fake cloud (scripts/fake_cloud): what the teardown sweep finds ----------

#: The role :func:`sagemaker_estate_cloud` creates (moto's default account for the key ``testing``).
ESTATE_ROLE = "arn:aws:iam::123456789012:role/sagemaker"
ESTATE_BUCKET = "estate-bucket"


def sagemaker_estate_cloud(cloud) -> tuple:
    """Prepare a (reset) fake cloud for resources that only exist: its role and bucket, and training jobs that
    wait for capacity (``starting_seconds``): ``InProgress`` with no process, until stopped.

    :return: ``(sagemaker, cloudwatch)`` boto3 clients on the fake.
    """
    assert cloud.bootstrap(ESTATE_BUCKET, "sagemaker") == ESTATE_ROLE
    cloud.configure(starting_seconds=7 * 86400)
    return cloud.client("sagemaker"), cloud.client("cloudwatch")


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def create_endpoint(sm, name: str, tags: dict[str, str], instance_type: str = "ml.g4dn.xlarge", count: int = 1) -> None:
    sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ESTATE_ROLE, PrimaryContainer={"Image": "img:latest"})
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": f"{name}-model", "InitialInstanceCount": count, "InstanceType": instance_type}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config", Tags=_tags(tags))


def create_notebook(sm, name: str, tags: dict[str, str], instance_type: str = "ml.p3.2xlarge") -> None:
    sm.create_notebook_instance(NotebookInstanceName=name, InstanceType=instance_type, RoleArn=ESTATE_ROLE, Tags=_tags(tags))


def create_training_job(sm, name: str, tags: dict[str, str], instance_type: str = "ml.g5.xlarge", count: int = 1,
                        max_runtime: int = 86400) -> None:
    """A training job that stays ``InProgress`` (waiting for capacity) on a :func:`sagemaker_estate_cloud`."""
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "img:latest", "TrainingInputMode": "File"},
        RoleArn=ESTATE_ROLE,
        OutputDataConfig={"S3OutputPath": f"s3://{ESTATE_BUCKET}/out"},
        ResourceConfig={"InstanceType": instance_type, "InstanceCount": count, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": max_runtime},
        Tags=_tags(tags),
    )


def create_processing_job(sm, name: str, tags: dict[str, str], instance_type: str = "ml.g4dn.xlarge") -> None:
    """A processing job (moto records it ``Completed``: the fake runs training jobs only)."""
    sm.create_processing_job(
        ProcessingJobName=name,
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": 10}},
        AppSpecification={"ImageUri": "img:latest"},
        RoleArn=ESTATE_ROLE,
        StoppingCondition={"MaxRuntimeInSeconds": 86400},
        Tags=_tags(tags),
    )


def invoke(cloudwatch, endpoint: str, at: float, count: float = 5.0) -> None:
    """Record ``count`` Invocations of the endpoint at epoch ``at`` (what SageMaker reports to CloudWatch)."""
    from datetime import UTC, datetime

    cloudwatch.put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[
            {
                "MetricName": "Invocations",
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}],
                "Timestamp": datetime.fromtimestamp(at, UTC),
                "Value": count,
                "Unit": "None",
            }
        ],
    )


def tags_of(sm, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}


@contextlib.contextmanager
def dagbag_of_spec(folder: Path, spec: dict) -> Iterator:
    """The project's ``dags/`` parsed with ``spec`` as the only pipeline (written to ``folder/<name>.yaml``,
    which ``RETRAIN_SPECS_DIR`` points at while open); fails on any import error."""
    from airflow.dag_processing.dagbag import DagBag

    (folder / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    os.environ["RETRAIN_SPECS_DIR"] = str(folder)
    try:
        bag = DagBag(dag_folder=str(ROOT / "dags"))
        assert bag.import_errors == {}
        yield bag
    finally:
        os.environ.pop("RETRAIN_SPECS_DIR", None)


def run_on_separate_workers(dag, base: Path, when) -> SimpleNamespace:
    """``dag.test()`` at ``when``, each task on its own worker (see :func:`tasks_on_separate_workers`): the
    run, its tasks' states and the workers used."""
    with tasks_on_separate_workers(base) as workers:
        dr = dag.test(logical_date=when, run_after=when)
    return SimpleNamespace(
        dr=dr, states={ti.task_id: ti.state for ti in dr.get_task_instances()}, workers=list(workers)
    )
