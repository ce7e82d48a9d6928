"""VertexTrainingBackend: Vertex AI custom jobs through ``google-cloud-aiplatform``'s ``JobServiceClient``.

The same ``train.py`` that runs locally and on SageMaker runs here unchanged: the backend stages the
entry point's folder and the channels in the staging bucket and starts the script through Vertex's
``/gcs/`` mount; the contract module reads Vertex's variables (``AIP_MODEL_DIR``, ``AIP_CHECKPOINT_DIR``,
``CLUSTER_SPEC``) and the channels (``RETRAIN_CHANNEL_<NAME>``), all ``gs://`` URIs, through that mount.

GCS layout, one prefix per job (``gs://<staging_bucket>/<prefix>/<job name>/``)::

    source/...            the entry point's folder (run as /gcs/<bucket>/<prefix>/<job>/source/<script>)
    input/<channel>/...   channels given as local folders, uploaded at submit
    model/                AIP_MODEL_DIR (base_output_directory/model)
    output/               metrics.json (RETRAIN_OUTPUT_DATA_URI)
    checkpoints/          AIP_CHECKPOINT_DIR (survives a Spot VM preemption)

Credentials and the default project come from the Airflow Google Cloud connection through the Google
provider: custom jobs through its ``CustomJobHook``/``CustomJobAsyncHook``
(:mod:`airflow_retrain.hooks.vertex_ai`: connection extras ``api_endpoint``, ``logging_api_endpoint``,
``api_endpoint_insecure`` for another endpoint), Cloud Storage through
``ObjectStoragePath("gs://...", conn_id=...)`` (gcsfs; extra ``gcs.endpoint`` for another endpoint), the
job's log through Cloud Logging (``resource.type="ml_job" resource.labels.job_id="<id>"``).

Every ``JobService`` call carries a deadline (``call_timeout``, :data:`CALL_TIMEOUT_SECONDS` by default):
the generated client sets none, so a silent endpoint would hold a poll forever. Within the deadline a call
that meets ``UNAVAILABLE`` (nothing listening, a dropped connection) is retried with backoff; past it, the
call fails as :class:`VertexCloudError` naming the job and the deadline (docs/outages.md).

Jobs carry the run's tags as labels in the portable label form (:func:`airflow_retrain.runs.to_labels`)
plus ``retrain_job-name``: Vertex allows duplicate display names, so that label is how a retry finds
the job it would otherwise start twice.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from airflow_retrain.runs import label_value, to_labels
from airflow_retrain.training.base import (
    JobState,
    TrainingBackend,
    TrainingInputError,
    TrainingJob,
    TrainingJobExists,
    TrainingJobNotFound,
    TrainingJobRequest,
    TrainingOutputs,
    TrainingOutputsMissing,
)
from airflow_retrain.training.vertex_catalog import machine_problems
from airflow_retrain.training.vertex_jobs import JOB_NAME_LABEL, timestamp, training_job

#: Deadline of one JobService call, retries of UNAVAILABLE included (seconds).
CALL_TIMEOUT_SECONDS = 30.0
DEFAULT_IMAGE = "us-docker.pkg.dev/vertex-ai/training/xgboost-cpu.2-1:latest"
_SOURCE_SKIP = {"__pycache__", ".ipynb_checkpoints", ".git"}


def _job_id(resource_name: str) -> str:
    """``<id>`` of ``projects/<p>/locations/<r>/customJobs/<id>`` (the provider's hooks take the id)."""
    return resource_name.rsplit("/", 1)[-1]


class VertexCloudError(RuntimeError):
    """The cloud failed a call for a reason that may pass (quota, unavailable, deadline): retry the task."""


class VertexTrainingBackend(TrainingBackend):
    """Train on Vertex AI custom jobs (``training.vertex``).

    :param project: Google Cloud project; default: the connection's project.
    :param region: Vertex AI region (``us-central1``).
    :param staging_bucket: GCS bucket (name or ``gs://name``) for code, staged inputs and outputs.
    :param image: training container image (a Vertex prebuilt XGBoost image by default).
    :param machine_type: worker machine type (``n1-standard-4``).
    :param accelerator_type: an ``AcceleratorType`` name (``NVIDIA_TESLA_T4``) or ``None``.
    :param accelerator_count: accelerators per replica.
    :param replica_count: replicas of the worker pool; default: the request's ``instance_count``.
    :param service_account: the service account the job runs as.
    :param network: VPC network (``projects/<number>/global/networks/<name>``).
    :param spot: run on Spot VMs (``scheduling.strategy = SPOT``); preempted jobs restart from checkpoints.
    :param prefix: object prefix under the staging bucket.
    :param connection_id: Airflow Google Cloud connection.
    :param call_timeout: deadline of each Vertex AI API call in seconds, retries included.
    """

    name = "vertex"
    remote = True

    def __init__(
        self,
        *,
        project: str | None = None,
        region: str | None = None,
        staging_bucket: str | None = None,
        image: str | None = None,
        machine_type: str = "n1-standard-4",
        accelerator_type: str | None = None,
        accelerator_count: int = 0,
        replica_count: int | None = None,
        service_account: str | None = None,
        network: str | None = None,
        spot: bool = False,
        prefix: str = "airflow-retrain",
        connection_id: str = "google_cloud_default",
        call_timeout: float = CALL_TIMEOUT_SECONDS,
    ) -> None:
        for field, value in (("region", region), ("staging_bucket", staging_bucket)):
            if not value:
                raise TrainingInputError(f"training.vertex.{field} is required for the vertex backend")
        problems = machine_problems(machine_type, accelerator_type, accelerator_count, "training.vertex")
        if problems:
            raise TrainingInputError("; ".join(problems))
        self.project = project
        self.region = str(region)
        self.staging_bucket = str(staging_bucket).removeprefix("gs://").strip("/")
        self.image = image
        self.machine_type = machine_type
        self.accelerator_type = accelerator_type
        self.accelerator_count = int(accelerator_count)
        self.replica_count = replica_count
        self.service_account = service_account
        self.network = network
        self.spot = bool(spot)
        self.prefix = prefix.strip("/")
        self.connection_id = connection_id
        self.call_timeout = float(call_timeout)
        self._resource_names: dict[str, str] = {}
        self._async_client: tuple[Any, Any, Any] | None = None

    def config(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "region": self.region,
            "staging_bucket": self.staging_bucket,
            "image": self.image,
            "machine_type": self.machine_type,
            "accelerator_type": self.accelerator_type,
            "accelerator_count": self.accelerator_count,
            "replica_count": self.replica_count,
            "service_account": self.service_account,
            "network": self.network,
            "spot": self.spot,
            "prefix": self.prefix,
            "connection_id": self.connection_id,
            "call_timeout": self.call_timeout,
        }

    # -- clients ------------------------------------------------------------------------------------

    @cached_property
    def hook(self):
        """The Google provider's ``CustomJobHook`` (with the connection's endpoint settings)."""
        from airflow_retrain.hooks.vertex_ai import VertexJobHook

        try:
            return VertexJobHook(gcp_conn_id=self.connection_id)
        except Exception as e:  # noqa: BLE001 - AirflowNotFoundException and friends
            raise TrainingInputError(f"Airflow connection {self.connection_id!r}: {e}") from None

    @cached_property
    def project_id(self) -> str:
        project = self.project
        if not project:
            with self._cloud_errors("read the project of the connection"):
                project = self.hook.project_id
        if not project:
            raise TrainingInputError(
                f"training.vertex.project is not set and Airflow connection {self.connection_id!r} names no project"
            )
        return str(project)

    @property
    def parent(self) -> str:
        return f"projects/{self.project_id}/locations/{self.region}"

    @property
    def client(self):
        """The JobServiceClient every hook call of this backend goes through (the hook caches it)."""
        with self._cloud_errors("connect to Vertex AI"):
            return self.hook.get_job_service_client(self.region)

    def _bounds(self, *, retry: bool = True) -> dict[str, Any]:
        """``retry`` and ``timeout`` for a JobService call: UNAVAILABLE retried, all within the deadline.

        :param retry: ``False`` for calls that create something: a retried create whose first attempt did
            land would start a second job.
        """
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry, if_exception_type

        if not retry:
            return {"retry": None, "timeout": self.call_timeout}

        retry = Retry(
            predicate=if_exception_type(gexc.ServiceUnavailable),
            initial=0.5,
            maximum=5.0,
            multiplier=2.0,
            timeout=self.call_timeout,
        )
        return {"retry": retry, "timeout": self.call_timeout}

    def _where(self) -> dict[str, str]:
        self.client  # noqa: B018 - endpoint and credential problems surface here, as one message
        return {"project_id": self.project_id, "region": self.region}

    @cached_property
    def bucket(self):
        """The staging bucket as an :class:`~airflow.sdk.ObjectStoragePath` (gcsfs, the same connection)."""
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(f"gs://{self.staging_bucket}/", conn_id=self.connection_id)

    def _keys(self, prefix: str) -> list[str]:
        """Object keys under ``prefix``, read now (gcsfs caches listings; outputs may have changed)."""
        fs = self.bucket.fs
        fs.invalidate_cache(f"{self.staging_bucket}/{prefix}")
        found = fs.find(f"{self.staging_bucket}/{prefix}")
        return sorted(str(k).split("/", 1)[1] for k in found if not str(k).endswith("/"))

    def _bucket_exists(self) -> bool:
        try:
            return self.bucket.fs.exists(self.staging_bucket)
        except (OSError, ValueError):  # gcsfs: access denied or an unusable bucket name
            return False

    def _remove(self, keys: list[str]) -> None:
        self.bucket.fs.rm([f"{self.staging_bucket}/{key}" for key in keys])

    def job_prefix(self, job_name: str) -> str:
        return f"{self.prefix}/{job_name}" if self.prefix else job_name

    def _uri(self, key: str) -> str:
        return f"gs://{self.staging_bucket}/{key}"

    # -- errors -------------------------------------------------------------------------------------

    @contextmanager
    def _cloud_errors(self, action: str, job_name: str | None = None, replicas: int | None = None):
        """Turn google.api_core errors into one message quoting the cloud's reason and naming what to fix."""
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import DefaultCredentialsError

        from airflow_retrain.hooks.vertex_ai import EndpointSettingError

        what = action + (f" (Vertex AI custom job {job_name})" if job_name else "")
        conn = f"Airflow connection {self.connection_id!r}"
        try:
            yield
        except gexc.ResourceExhausted as e:
            raise VertexCloudError(
                f"{what}: quota exceeded ({e.message}); lower training.vertex.replica_count "
                f"({replicas or self.replica_count or 1} x {self.machine_type}"
                f"{' + ' + self.accelerator_type if self.accelerator_type else ''}), raise the project's quota in "
                f"{self.region}, or queue retrains with training.pool"
            ) from None
        except gexc.InvalidArgument as e:
            raise TrainingInputError(f"{what}: {self._field_for(e.message)}: the cloud refused it ({e.message})") from None
        except (gexc.PermissionDenied, gexc.Unauthenticated) as e:
            raise TrainingInputError(
                f"{what}: access denied ({e.message}); check the credentials of {conn} and "
                f"training.vertex.service_account / project {self.project}"
            ) from None
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError) as e:
            # Nothing listening, or no answer: the call's deadline (retries included) is spent.
            raise VertexCloudError(
                f"{what}: no answer from Vertex AI within the call deadline of {self.call_timeout:g} s "
                f"({type(e).__name__}: {getattr(e, 'message', e)}); check {conn} and the region {self.region}"
            ) from None
        except (gexc.InternalServerError, gexc.TooManyRequests) as e:
            raise VertexCloudError(f"{what}: the cloud failed ({type(e).__name__}: {e.message}); retry") from None
        except DefaultCredentialsError as e:
            raise TrainingInputError(f"{what}: no credentials ({e}); set them in {conn}") from None
        except EndpointSettingError as e:
            raise TrainingInputError(f"{what}: {e}") from None

    @staticmethod
    def _field_for(message: str) -> str:
        low = message.lower()
        for needle, field in (
            ("accelerator_count", "training.vertex.accelerator_count"),
            ("accelerator", "training.vertex.accelerator_type"),
            ("machine_type", "training.vertex.machine_type"),
            ("replica", "training.vertex.replica_count"),
            ("image", "training.vertex.image"),
            ("service account", "training.vertex.service_account"),
            ("network", "training.vertex.network"),
            ("output_uri_prefix", "training.vertex.staging_bucket"),
            ("parent", "training.vertex.project/region"),
        ):
            if needle in low:
                return field
        return "the training request"

    # -- the interface ------------------------------------------------------------------------------

    def _resource_name(self, job_name: str) -> str:
        if name := self._resource_names.get(job_name):
            return name
        jobs = self._list({JOB_NAME_LABEL: label_value(job_name)}, job_name)
        if not jobs:
            raise TrainingJobNotFound(f"no Vertex AI custom job {job_name!r} in {self.parent}")
        self._resource_names[job_name] = jobs[-1].name
        return jobs[-1].name

    def _list(self, labels: dict[str, str], job_name: str | None = None) -> list[Any]:
        filter_ = " AND ".join(f'labels.{k}="{v}"' for k, v in sorted(labels.items()))
        with self._cloud_errors("ListCustomJobs", job_name):
            pager = self.hook.list_custom_jobs(
                **self._where(), page_size=100, page_token=None, filter=filter_, read_mask=None, **self._bounds()
            )
            jobs = [j for j in pager if all(j.labels.get(k) == v for k, v in labels.items())]
        return sorted(jobs, key=lambda j: timestamp(j.create_time) or 0)

    def _get(self, job_name: str):
        from google.api_core import exceptions as gexc

        name = self._resource_name(job_name)
        with self._cloud_errors("GetCustomJob", job_name):
            try:
                return self.hook.get_custom_job(**self._where(), custom_job=_job_id(name), **self._bounds())
            except gexc.NotFound:
                raise TrainingJobNotFound(f"no Vertex AI custom job {job_name!r} ({name})") from None

    def describe(self, job_name: str) -> TrainingJob:
        return self._job(self._get(job_name))

    def _job(self, cj: Any) -> TrainingJob:
        job = training_job(cj, self.name, self.region, self.machine_type)
        self._resource_names.setdefault(job.job_name, cj.name)
        return job

    def submit(self, request: TrainingJobRequest) -> TrainingJob:
        """Stage the source and local channels, then ``CreateCustomJob``.

        A job already labelled with this name raises :class:`TrainingJobExists` (Vertex itself accepts
        duplicate display names), so a retry reattaches instead of starting a second job.
        """
        name = request.job_name
        entry = Path(request.entry_point)
        if not entry.is_file():
            raise TrainingInputError(f"training.entry_point: no such file {entry}")
        if request.gpu == "required" and not self.accelerator_type:
            raise TrainingInputError(
                f"training.resources.gpu is 'required' but training.vertex.accelerator_type is not set "
                f"({self.machine_type} has no GPU)"
            )
        if self._list({JOB_NAME_LABEL: label_value(name)}, name):
            raise TrainingJobExists(f"Vertex AI custom job {name!r} already exists in {self.parent}")
        if not self._bucket_exists():
            raise TrainingInputError(
                f"training.vertex.staging_bucket: bucket gs://{self.staging_bucket} does not exist or is not "
                f"readable with Airflow connection {self.connection_id!r}"
            )
        replicas = int(self.replica_count or request.instance_count or 1)
        staged: list[str] = []
        try:
            script = f"{self._upload_source(name, entry.parent, staged)}/{entry.name}"
            channels = {ch: self._channel_uri(name, ch, loc, staged) for ch, loc in request.channels.items()}
            body = self._custom_job(request, script, channels, replicas)
            with self._cloud_errors("CreateCustomJob", name, replicas):
                created = self.hook.create_custom_job(**self._where(), custom_job=body, **self._bounds(retry=False))
        except BaseException:
            self._delete(staged)  # nothing half-done: no staged inputs without a job
            raise
        self._resource_names[name] = created.name
        return self._job(created)

    def _custom_job(self, request: TrainingJobRequest, script: str, channels: dict[str, str], replicas: int) -> dict:
        base = self._uri(self.job_prefix(request.job_name)) + "/"
        env = {f"RETRAIN_CHANNEL_{ch.upper()}": uri for ch, uri in channels.items()}
        env["RETRAIN_OUTPUT_DATA_URI"] = base + "output/"
        args: list[str] = []
        for key, value in request.hyperparameters.items():
            args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
        machine: dict[str, Any] = {"machine_type": self.machine_type}
        if self.accelerator_type:
            machine.update(accelerator_type=self.accelerator_type, accelerator_count=self.accelerator_count)
        scheduling: dict[str, Any] = {"timeout": f"{int(request.max_runtime_seconds)}s"}
        if self.spot:
            scheduling["strategy"] = "SPOT"
        spec: dict[str, Any] = {
            "worker_pool_specs": [
                {
                    "machine_spec": machine,
                    "replica_count": replicas,
                    "container_spec": {
                        "image_uri": self.image or DEFAULT_IMAGE,
                        "command": ["python", script],
                        "args": args,
                        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                    },
                }
            ],
            "base_output_directory": {"output_uri_prefix": base},
            "scheduling": scheduling,
        }
        if self.service_account:
            spec["service_account"] = self.service_account
        if self.network:
            spec["network"] = self.network
        labels = to_labels(request.tags)
        labels[JOB_NAME_LABEL] = label_value(request.job_name)
        return {"display_name": request.job_name, "labels": labels, "job_spec": spec}

    def _upload_source(self, job_name: str, folder: Path, staged: list[str]) -> str:
        base = f"{self.job_prefix(job_name)}/source"
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path.is_dir() or _SOURCE_SKIP.intersection(rel.parts) or path.suffix == ".pyc":
                continue
            key = f"{base}/{rel.as_posix()}"
            (self.bucket / key).write_bytes(path.read_bytes())
            staged.append(key)
        # Vertex mounts buckets at /gcs/<bucket>/: the script runs from there, its folder beside it.
        return f"/gcs/{self.staging_bucket}/{base}"

    def _channel_uri(self, job_name: str, channel: str, location: str, staged: list[str]) -> str:
        location = str(location)
        if location.startswith("gs://"):
            return location.rstrip("/") + "/"
        scheme = urlparse(location).scheme
        if scheme not in ("", "file"):
            raise TrainingInputError(
                f"training job {job_name}: channel {channel!r} at {location} is neither gs:// nor a local folder "
                "(the vertex backend reads channels from Cloud Storage)"
            )
        local = Path(urlparse(location).path if scheme == "file" else location)
        if not local.exists():
            raise TrainingInputError(f"training job {job_name}: channel {channel!r} path {local} does not exist")
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        if not files:
            raise TrainingInputError(f"training job {job_name}: channel {channel!r} folder {local} is empty")
        base = f"{self.job_prefix(job_name)}/input/{channel}"
        for path in files:
            rel = path.name if local.is_file() else path.relative_to(local).as_posix()
            (self.bucket / f"{base}/{rel}").write_bytes(path.read_bytes())
            staged.append(f"{base}/{rel}")
        return self._uri(base) + "/"

    def _delete(self, keys: list[str]) -> None:
        try:
            self._remove(keys)
        except Exception:  # noqa: BLE001 - best effort; the original error matters more
            pass

    def stop(self, job_name: str) -> TrainingJob:
        from google.api_core import exceptions as gexc

        job = self.describe(job_name)
        if job.state.terminal or job.state == JobState.STOPPING:
            return job
        with self._cloud_errors("CancelCustomJob", job_name):
            try:
                self.hook.cancel_custom_job(
                    **self._where(), custom_job=_job_id(self._resource_name(job_name)), **self._bounds()
                )
            except gexc.FailedPrecondition:
                pass  # it finished between describe and cancel
        return self.describe(job_name)

    def find_jobs(self, tags: dict[str, str]) -> list[TrainingJob]:
        """Jobs carrying all ``tags`` (matched in label form), through ``ListCustomJobs`` with a label filter."""
        return [self._job(cj) for cj in self._list(to_labels(tags))]

    def fetch_outputs(self, job_name: str, destination: Any) -> TrainingOutputs:
        """Copy ``model/`` and ``output/`` of the job's base output directory under ``destination``."""
        base = self.job_prefix(job_name)
        model_dir, output_dir = destination / "model", destination / "output"
        copied = {}
        for part, target in (("model", model_dir), ("output", output_dir)):
            keys = self._keys(f"{base}/{part}/")
            copied[part] = keys
            if not keys:
                continue
            for key in keys:
                rel = PurePosixPath(key[len(f"{base}/{part}/") :])
                if rel.is_absolute() or ".." in rel.parts:
                    raise RuntimeError(f"training job {job_name}: unsafe output path {key!r}")
                dest = target
                for piece in rel.parts[:-1]:
                    dest = dest / piece
                dest.mkdir(parents=True, exist_ok=True)
                (dest / rel.parts[-1]).write_bytes((self.bucket / key).read_bytes())
        if not copied["model"] or not any(k.endswith("/metrics.json") for k in copied["output"]):
            job = self.describe(job_name)
            if job.state != JobState.COMPLETED:
                raise RuntimeError(f"training job {job_name} is {job.state.value}, not Completed: no outputs")
            missing = "model/" if not copied["model"] else "output/metrics.json"
            raise TrainingOutputsMissing(
                f"training job {job_name} completed but its {missing} is missing from {self._uri(base)}/"
            )
        from airflow_retrain.artifacts import to_uri

        return TrainingOutputs(model_uri=to_uri(model_dir), output_uri=to_uri(output_dir))

    def cleanup(self, job_name: str) -> list[str]:
        """Delete what submit staged (source and uploaded channels); keep outputs and checkpoints."""
        removed = []
        for part in ("source", "input"):
            prefix = f"{self.job_prefix(job_name)}/{part}/"
            keys = self._keys(prefix)
            if keys:
                self._remove(keys)
                removed.append(self._uri(prefix))
        return removed

    def read_logs(self, job_name: str, offset: int | str = 0) -> tuple[str, int | str]:
        """The job's Cloud Logging lines after ``offset``: ``0`` (from the start) or the cursor
        ``"<RFC 3339 timestamp>|<insertId>"`` of the last entry read, which this returns next."""
        from airflow_retrain.hooks.vertex_ai import read_job_log

        job_id = _job_id(self._resource_name(job_name))
        with self._cloud_errors("read the job's Cloud Logging entries", job_name):
            lines, cursor = read_job_log(self.hook, self.project_id, job_id, str(offset) if offset else None,
                                         self.call_timeout)
        return "".join(f"{line}\n" for line in lines), cursor or offset

    async def aread_logs(self, job_name: str, offset: int | str = 0) -> tuple[str, int | str]:
        """:meth:`read_logs` on Cloud Logging's async client (the triggerer's event loop)."""
        from airflow_retrain.hooks.vertex_ai import aread_job_log

        name = self._resource_names.get(job_name) or await asyncio.to_thread(self._resource_name, job_name)
        await asyncio.to_thread(self._where)  # connection, endpoint and project: read once, off the loop
        with self._cloud_errors("read the job's Cloud Logging entries", job_name):
            lines, cursor = await aread_job_log(self.hook, self.project_id, _job_id(name),
                                                str(offset) if offset else None, self.call_timeout)
        return "".join(f"{line}\n" for line in lines), cursor or offset

    async def adescribe(self, job_name: str) -> TrainingJob:
        """:meth:`describe` through the provider's ``CustomJobAsyncHook`` (the triggerer's event loop)."""
        from google.api_core import exceptions as gexc
        from google.api_core.retry import AsyncRetry, if_exception_type

        from airflow_retrain.hooks.vertex_ai import VertexJobAsyncHook

        name = self._resource_names.get(job_name) or await asyncio.to_thread(self._resource_name, job_name)
        await asyncio.to_thread(self._where)
        loop = asyncio.get_running_loop()
        if self._async_client is None or self._async_client[0] is not loop:  # an aio channel serves one loop
            hook = VertexJobAsyncHook(gcp_conn_id=self.connection_id)
            with self._cloud_errors("connect to Vertex AI", job_name):
                self._async_client = (loop, hook, await hook.get_job_service_client(self.region))
        _, hook, client = self._async_client
        retry = AsyncRetry(predicate=if_exception_type(gexc.ServiceUnavailable), initial=0.5, maximum=5.0,
                           multiplier=2.0, timeout=self.call_timeout)
        with self._cloud_errors("GetCustomJob", job_name):
            try:
                cj = await hook.get_custom_job(project_id=self.project_id, location=self.region, job_id=_job_id(name),
                                               retry=retry, timeout=self.call_timeout, client=client)
            except gexc.NotFound:
                raise TrainingJobNotFound(f"no Vertex AI custom job {job_name!r} ({name})") from None
        return self._job(cj)

    def log_location(self, job_name: str) -> str | None:
        params = self.job_link_params(job_name)
        if not params:
            return None
        return (f"Cloud Logging, project {params['project_id']}: resource.type=ml_job "
                f"resource.labels.job_id={params['custom_job_id']}")

    def job_link_params(self, job_name: str) -> dict[str, str]:
        resource = self._resource_names.get(job_name)  # projects/<project>/locations/<region>/customJobs/<id>
        if not resource:
            return {}
        return {"region": self.region, "project_id": resource.split("/")[1], "custom_job_id": resource.rsplit("/", 1)[-1]}
