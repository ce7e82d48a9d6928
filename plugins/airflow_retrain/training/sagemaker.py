"""SageMakerTrainingBackend: managed training jobs through the Amazon provider's hooks (boto3).

The entry point's folder is packed as ``sourcedir.tar.gz`` and run through the framework-container
convention (hyperparameters ``sagemaker_program`` and ``sagemaker_submit_directory``, every value
JSON-encoded as the SageMaker SDK does), so a script written for the training-container contract -- the
same one the local backend emulates -- runs unchanged in the SageMaker XGBoost framework image or a
custom image.

S3 layout, one prefix per job (``s3://<bucket>/<prefix>/<job name>/``)::

    source/sourcedir.tar.gz     the entry point's folder
    input/<channel>/...         channels given as local folders, uploaded at submit
    output/model.tar.gz         written by SageMaker (SM_MODEL_DIR)
    output/output.tar.gz        written by SageMaker (SM_OUTPUT_DATA_DIR: metrics.json)

Staging, unpacking and cleanup are :class:`~airflow_retrain.training.remote.RemoteTrainingBackend`'s,
through :class:`~airflow.sdk.ObjectStoragePath` (the Amazon provider's s3fs integration). The job API goes
through the provider's :class:`SageMakerHook` (create, describe -- its async describe in the triggerer --
and its client for stop and the Search paginator) and the CloudWatch Logs paginators of
:class:`AwsLogsHook`'s clients, sync and async.

Credentials, region and endpoint come from the Airflow AWS connection (``connection_id``; its extra
``endpoint_url`` points every client at a fake cloud in tests and demos). Every SageMaker and CloudWatch
client is bounded
(:func:`bounded_botocore_config`, docs/outages.md): botocore's ``standard`` retries, at most
:data:`MAX_ATTEMPTS` attempts of :data:`CONNECT_TIMEOUT_SECONDS` to connect and :data:`READ_TIMEOUT_SECONDS`
to answer, so a call to an unreachable or silent AWS fails within :data:`CALL_BOUND_SECONDS`; the
connection's extra ``config_kwargs`` (the Amazon provider's way) overrides any of them; S3 transfers take
that extra through the provider's ``get_fs`` (s3fs's own timeouts and retries otherwise). Cloud errors are
re-raised as one message that quotes the cloud's reason and names the spec field or connection to fix
(:data:`ERROR_RULES`, a table); refusals a retry cannot fix raise
:class:`~airflow_retrain.training.base.TrainingInputError`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_retrain.training.base import (
    JobState,
    TrainingInputError,
    TrainingJob,
    TrainingJobExists,
    TrainingJobNotFound,
    TrainingJobRequest,
)
from airflow_retrain.training.remote import OutputLocation, RemoteTrainingBackend
from airflow_retrain.training.sagemaker_catalog import DEFAULT_XGBOOST_VERSION, xgboost_image_uri
from airflow_retrain.training.sagemaker_errors import (
    CALL_BOUND_SECONDS,
    CONNECT_TIMEOUT_SECONDS,
    ERROR_RULES,
    MAX_ATTEMPTS,
    READ_TIMEOUT_SECONDS,
    SageMakerCloudError,
    bounded_botocore_config,
    cloud_errors,
)

# The bounds and the retryable error live in sagemaker_errors; they are this backend's public names too.
__all__ = ["CALL_BOUND_SECONDS", "CONNECT_TIMEOUT_SECONDS", "MAX_ATTEMPTS", "READ_TIMEOUT_SECONDS",
           "SageMakerCloudError", "SageMakerTrainingBackend", "bounded_botocore_config", "tag_value"]

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

LOG_GROUP = "/aws/sagemaker/TrainingJobs"

# SecondaryStatus values before the container runs the script: the job holds no GPU time yet that
# the script could use (SageMaker bills from "Downloading" on, which BillableTimeInSeconds reflects).
_PENDING_SECONDARY = {"Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
                      "DownloadingTrainingImage"}
_STATUS = {"Completed": JobState.COMPLETED, "Failed": JobState.FAILED, "Stopping": JobState.STOPPING,
           "Stopped": JobState.STOPPED}
_TAG_VALUE_BAD = re.compile(r"[^\w\s.:/=+\-@]")

def _ts(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else (float(value) if value else None)


def tag_value(value: str) -> str:
    """A tag value SageMaker accepts (letters, digits, spaces and ``_.:/=+-@``; at most 256 chars)."""
    return _TAG_VALUE_BAD.sub("_", str(value))[:256]


@dataclass(frozen=True)
class _LogCursor:
    """Where this process last read a job's log: ``lines`` delivered, up to ``start_ms``, whose events at
    ``start_ms`` were ``seen`` (CloudWatch event ids). It makes the next read start at ``start_ms``."""

    lines: int
    start_ms: int
    seen: frozenset[str]


class SageMakerTrainingBackend(RemoteTrainingBackend):
    """Train on SageMaker.

    :param role_arn: execution role the job runs as (``training.sagemaker.role_arn``).
    :param bucket: S3 bucket for code, staged inputs and outputs.
    :param prefix: key prefix under ``bucket``.
    :param region: AWS region of the jobs (and of the price looked up for them).
    :param connection_id: Airflow AWS connection (credentials; extra ``endpoint_url`` for a fake cloud).
    :param image: training image URI; default: the SageMaker XGBoost framework image of
        ``framework_version`` in ``region``.
    :param framework_version: SageMaker XGBoost framework version for the default image.
    :param volume_size_gb: EBS volume per instance.
    :param subnets: VPC subnets (with ``security_group_ids``).
    :param security_group_ids: VPC security groups (with ``subnets``).
    :param kms_key_id: KMS key for the output and the training volume.
    :param spot: managed spot training; the job may wait up to its max runtime again for capacity.
    :param max_attempts: botocore attempts per call (throttling and transient errors, with backoff);
        the connection's extra ``config_kwargs`` overrides it.
    :param retry_mode: botocore retry mode (``standard``: bounded backoff; ``adaptive`` also rate-limits
        the client when throttled, which can make a call wait longer than :data:`CALL_BOUND_SECONDS`).
    """

    name = "sagemaker"
    scheme = "s3"
    error_rules = ERROR_RULES
    missing_object = "NoSuchKey"  # S3's code for it; s3fs's HEAD reports only 404

    def __init__(
        self,
        *,
        role_arn: str,
        bucket: str,
        prefix: str = "airflow-retrain",
        region: str = "us-east-1",
        connection_id: str = "aws_default",
        image: str | None = None,
        framework_version: str = DEFAULT_XGBOOST_VERSION,
        volume_size_gb: int = 30,
        subnets: list[str] | None = None,
        security_group_ids: list[str] | None = None,
        kms_key_id: str | None = None,
        spot: bool = False,
        max_attempts: int = MAX_ATTEMPTS,
        retry_mode: str = "standard",
    ) -> None:
        for field, value in (("role_arn", role_arn), ("bucket", bucket)):
            if not value:
                raise TrainingInputError(f"training.sagemaker.{field} is required for the sagemaker backend")
        self.role_arn = role_arn
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self.connection_id = connection_id
        self.image = image
        self.framework_version = framework_version
        self.volume_size_gb = volume_size_gb
        self.subnets = list(subnets or [])
        self.security_group_ids = list(security_group_ids or [])
        self.kms_key_id = kms_key_id
        self.spot = spot
        self.max_attempts = max_attempts
        self.retry_mode = retry_mode
        self._log_cursors: dict[str, _LogCursor] = {}

    def config(self) -> dict[str, Any]:
        return {
            "role_arn": self.role_arn,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "region": self.region,
            "connection_id": self.connection_id,
            "image": self.image,
            "framework_version": self.framework_version,
            "volume_size_gb": self.volume_size_gb,
            "subnets": self.subnets,
            "security_group_ids": self.security_group_ids,
            "kms_key_id": self.kms_key_id,
            "spot": self.spot,
            "max_attempts": self.max_attempts,
            "retry_mode": self.retry_mode,
        }

    # -- hooks and clients, built on first use ----------------------------------------------------------

    @cached_property
    def client_config(self):
        """The botocore config every client of this backend uses (bounded; the connection may override)."""
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        plain = SageMakerHook(aws_conn_id=self.connection_id, region_name=self.region)
        return bounded_botocore_config(plain, max_attempts=self.max_attempts, retry_mode=self.retry_mode)

    @cached_property
    def hook(self):
        """The provider's SageMaker hook; its sync and async clients carry :attr:`client_config`."""
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=self.connection_id, region_name=self.region, config=self.client_config)

    @cached_property
    def logs_hook(self):
        from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook

        return AwsLogsHook(aws_conn_id=self.connection_id, region_name=self.region, config=self.client_config)

    @cached_property
    def sagemaker(self):
        with self.cloud_errors("connect to SageMaker"):
            return self.hook.conn

    @cached_property
    def logs(self):
        with self.cloud_errors("connect to CloudWatch Logs"):
            return self.logs_hook.conn

    @property
    def image_uri(self) -> str:
        if self.image:
            return self.image
        try:
            return xgboost_image_uri(self.region, self.framework_version)
        except LookupError as e:
            raise TrainingInputError(f"training.sagemaker.image: not set and {e}") from None

    @property
    def staging_root(self) -> ObjectStoragePath:
        from airflow_retrain.artifacts import artifact_path

        return artifact_path(f"s3://{self.bucket}/{self.prefix}".rstrip("/"), self.connection_id)

    # -- error translation ------------------------------------------------------------------------------

    def cloud_errors(self, action: str, job_name: str | None = None, request: TrainingJobRequest | None = None):
        """Turn boto (and s3fs) errors into one message quoting the cloud's reason and naming what to fix."""
        return cloud_errors(self, action, job_name, request)

    @staticmethod
    def _not_found(error: Any) -> bool:
        err = error.response.get("Error", {})
        return err.get("Code") in ("ValidationException", "ResourceNotFound") and (
            "could not find" in str(err.get("Message", "")).lower()
        )

    # -- the interface ----------------------------------------------------------------------------------

    def describe(self, job_name: str) -> TrainingJob:
        from botocore.exceptions import ClientError

        with self.cloud_errors("DescribeTrainingJob", job_name):
            try:
                return self._job(self.hook.describe_training_job(job_name))
            except ClientError as e:
                if self._not_found(e):
                    raise TrainingJobNotFound(f"no SageMaker training job {job_name!r} in {self.region}") from None
                raise

    async def adescribe(self, job_name: str) -> TrainingJob:
        """:meth:`describe` through the hook's async (aiobotocore) client, for the triggerer."""
        from botocore.exceptions import ClientError

        with self.cloud_errors("DescribeTrainingJob", job_name):
            try:
                return self._job(await self.hook.describe_training_job_async(job_name))
            except ClientError as e:
                if self._not_found(e):
                    raise TrainingJobNotFound(f"no SageMaker training job {job_name!r} in {self.region}") from None
                raise

    def _job(self, desc: dict[str, Any], tags: dict[str, str] | None = None) -> TrainingJob:
        status = desc.get("TrainingJobStatus", "InProgress")
        secondary = desc.get("SecondaryStatus") or ""
        if status == "InProgress":
            state = JobState.PENDING if secondary in _PENDING_SECONDARY else JobState.RUNNING
        else:
            state = _STATUS.get(status, JobState.FAILED)
        reason = desc.get("FailureReason")
        if state == JobState.STOPPED and secondary == "MaxRuntimeExceeded":
            reason = reason or "MaxRuntimeExceeded: the job ran past training.resources.max_runtime_seconds"
        resources = desc.get("ResourceConfig") or {}
        transitions = [
            {"status": t.get("Status"), "message": t.get("StatusMessage", "")}
            for t in desc.get("SecondaryStatusTransitions") or []
        ]
        tags = tags if tags is not None else {t["Key"]: t["Value"] for t in desc.get("Tags") or []}
        return TrainingJob(
            job_name=desc["TrainingJobName"],
            backend=self.name,
            state=state,
            instance_type=resources.get("InstanceType", "unknown"),
            instance_count=int(resources.get("InstanceCount", 1)),
            created_at=_ts(desc.get("CreationTime")),
            started_at=_ts(desc.get("TrainingStartTime")),
            ended_at=_ts(desc.get("TrainingEndTime")) if state.terminal else None,
            billable_seconds=float(desc.get("BillableTimeInSeconds") or 0),
            failure_reason=reason,
            tags=tags,
            details={
                "status": status,
                "secondary_status": secondary,
                "transitions": transitions,
                "region": self.region,
                "spot": bool(desc.get("EnableManagedSpotTraining", False)),
                "training_seconds": desc.get("TrainingTimeInSeconds"),
                "model_artifacts": (desc.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
                "output_path": (desc.get("OutputDataConfig") or {}).get("S3OutputPath"),
            },
        )

    def submit(self, request: TrainingJobRequest) -> TrainingJob:
        """Stage the source and local channels, then create the job through the hook.

        A taken name raises :class:`TrainingJobExists` (SageMaker refuses duplicate names), so a retry
        that races its own earlier attempt reattaches instead of starting a second job. The hook checks
        that every channel's S3 prefix exists before it creates the job.
        """
        from airflow.providers.common.compat.sdk import AirflowException
        from botocore.exceptions import ClientError

        name = request.job_name
        if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name):
            raise TrainingInputError(f"training job name {name!r} is not valid on SageMaker (<= 63 of [a-zA-Z0-9-])")
        entry = Path(request.entry_point)
        if not entry.is_file():
            raise TrainingInputError(f"training.entry_point: no such file {entry}")
        if request.gpu == "required" and not self._has_gpu(request.instance_type):
            raise TrainingInputError(
                f"training.resources.gpu is 'required' but {request.instance_type} has no GPU"
            )
        image = self.image_uri
        with self.staging() as staged:
            submit_dir = self.stage_source(name, entry.parent, staged)
            params = self._create_params(request, image, submit_dir, self.stage_channels(request, staged))
            with self.cloud_errors("CreateTrainingJob", name, request):
                try:
                    self.hook.create_training_job(params, wait_for_completion=False, print_log=False)
                except AirflowException as e:  # the hook's check of the channels' S3 prefixes
                    raise TrainingInputError(f"CreateTrainingJob (training job {name}): training channels: {e}") from None
                except ClientError as e:
                    message = str(e.response.get("Error", {}).get("Message", "")).lower()
                    if e.response.get("Error", {}).get("Code") in ("ResourceInUse", "ValidationException") and (
                        "unique" in message or "already exists" in message
                    ):
                        staged.clear()  # a taken name keeps its staged files: they are the existing job's inputs
                        raise TrainingJobExists(f"SageMaker training job {name!r} already exists") from None
                    raise
        # The job as just created (a describe would cost one more call and say the same).
        return TrainingJob(
            job_name=name,
            backend=self.name,
            state=JobState.PENDING,
            instance_type=request.instance_type,
            instance_count=request.instance_count,
            created_at=time.time(),
            tags={t["Key"]: t["Value"] for t in params["Tags"]},
            details={"status": "InProgress", "secondary_status": "Starting", "region": self.region,
                     "spot": self.spot},
        )

    @staticmethod
    def _has_gpu(instance_type: str) -> bool:
        family = instance_type.removeprefix("ml.").split(".")[0]
        return family[:1] in ("g", "p") or family.startswith(("trn", "inf"))

    def _create_params(
        self, request: TrainingJobRequest, image: str, submit_dir: str, channels: dict[str, str]
    ) -> dict[str, Any]:
        hps: dict[str, str] = {k: json.dumps(v) for k, v in request.hyperparameters.items()}
        hps.update(
            {
                "sagemaker_program": json.dumps(Path(request.entry_point).name),
                "sagemaker_submit_directory": json.dumps(submit_dir),
                "sagemaker_region": json.dumps(self.region),
                "sagemaker_job_name": json.dumps(request.job_name),
                "sagemaker_container_log_level": "20",
            }
        )
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": int(request.max_runtime_seconds)}
        if self.spot:
            stopping["MaxWaitTimeInSeconds"] = 2 * int(request.max_runtime_seconds)
        resources: dict[str, Any] = {
            "InstanceType": request.instance_type,
            "InstanceCount": int(request.instance_count),
            "VolumeSizeInGB": int(self.volume_size_gb),
        }
        output: dict[str, Any] = {"S3OutputPath": f"s3://{self.bucket}/{self.prefix}".rstrip("/")}
        if self.kms_key_id:
            resources["VolumeKmsKeyId"] = self.kms_key_id
            output["KmsKeyId"] = self.kms_key_id
        params: dict[str, Any] = {
            "TrainingJobName": request.job_name,
            "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
            "RoleArn": self.role_arn,
            "HyperParameters": hps,
            "InputDataConfig": [
                {
                    "ChannelName": channel,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                }
                for channel, uri in channels.items()
            ],
            "OutputDataConfig": output,
            "ResourceConfig": resources,
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": bool(self.spot),
            "Tags": [{"Key": k[:128], "Value": tag_value(v)} for k, v in request.tags.items()],
        }
        if self.spot:
            # Managed spot: SageMaker syncs /opt/ml/checkpoints (SM_CHECKPOINT_DIR) with this prefix and
            # restores it when the job restarts after an interruption; the script resumes from it.
            params["CheckpointConfig"] = {
                "S3Uri": self.uri(self.job_path(request.job_name) / "checkpoints", folder=True),
                "LocalPath": "/opt/ml/checkpoints",
            }
        if self.subnets:
            params["VpcConfig"] = {"Subnets": self.subnets, "SecurityGroupIds": self.security_group_ids}
        return params

    def stop(self, job_name: str) -> TrainingJob:
        job = self.describe(job_name)
        if job.state.terminal or job.state == JobState.STOPPING:
            return job
        try:
            with self.cloud_errors("StopTrainingJob", job_name):
                self.sagemaker.stop_training_job(TrainingJobName=job_name)
        except TrainingInputError:
            # A job that finished between describe and stop is refused with a ValidationException.
            if not self._stopped_or_done(self.describe(job_name)):
                raise
        return self.describe(job_name)

    async def astop(self, job_name: str) -> TrainingJob:
        """:meth:`stop` through the hook's async client, for the triggerer."""
        job = await self.adescribe(job_name)
        if self._stopped_or_done(job):
            return job
        try:
            with self.cloud_errors("StopTrainingJob", job_name):
                async with await self.hook.get_async_conn() as client:
                    await client.stop_training_job(TrainingJobName=job_name)
        except TrainingInputError:
            if not self._stopped_or_done(await self.adescribe(job_name)):
                raise
        return await self.adescribe(job_name)

    @staticmethod
    def _stopped_or_done(job: TrainingJob) -> bool:
        return job.state.terminal or job.state == JobState.STOPPING

    def find_jobs(self, tags: dict[str, str]) -> list[TrainingJob]:
        """Jobs carrying all ``tags``, through the Search paginator (pages of 100 jobs).

        Search is eventually consistent on AWS (a job may appear seconds after its creation): the operator
        therefore also probes the deterministic name it is about to create (``submit`` refuses a taken
        name with :class:`TrainingJobExists`, which the operator turns into a reattach).
        """
        wanted = {k: tag_value(v) for k, v in tags.items()}
        kwargs: dict[str, Any] = {"Resource": "TrainingJob", "PaginationConfig": {"PageSize": 100}}
        if wanted:
            kwargs["SearchExpression"] = {
                "Filters": [{"Name": f"Tags.{k}", "Operator": "Equals", "Value": v} for k, v in wanted.items()],
                "Operator": "And",
            }
        jobs = []
        with self.cloud_errors("search training jobs by tag"):
            for page in self.sagemaker.get_paginator("search").paginate(**kwargs):
                for result in page.get("Results", []):
                    desc = result.get("TrainingJob") or {}
                    job_tags = {t["Key"]: t["Value"] for t in desc.get("Tags") or []}
                    # Verify client-side as well: moto applies only the first tag filter.
                    if all(job_tags.get(k) == v for k, v in wanted.items()) and desc.get("TrainingJobName"):
                        jobs.append(self._job(desc, job_tags))
        return sorted(jobs, key=lambda j: j.created_at or 0)

    def output_locations(self, job_name: str) -> list[OutputLocation]:
        """``model.tar.gz`` and ``output.tar.gz`` where this backend told SageMaker to write them
        (``S3OutputPath/<job>/output/``): no describe call is needed unless they are missing."""
        output = self.job_path(job_name) / "output"
        return [
            OutputLocation("model", output / "model.tar.gz", "model (SM_MODEL_DIR)"),
            OutputLocation("output", output / "output.tar.gz", "output data (SM_OUTPUT_DATA_DIR, metrics.json)"),
        ]

    def cleanup(self, job_name: str) -> list[str]:
        """Delete what submit staged (source and uploaded channels); keep outputs and the job's record."""
        self._log_cursors.pop(job_name, None)
        return super().cleanup(job_name)

    # -- logs ---------------------------------------------------------------------------------------------

    def read_logs(self, job_name: str, offset: int = 0) -> tuple[str, int]:
        """CloudWatch log lines of the job's streams (``<job name>/algo-N-...``) after the first ``offset``.

        ``offset`` counts the lines delivered so far. This process remembers where it read up to (the
        newest timestamp and the event ids seen there), so a read continuing from the offset it returned
        asks only for events from that timestamp on; another offset (a new process, a restarted triggerer)
        reads the log from its start and skips ``offset`` lines.
        """
        from botocore.exceptions import ClientError

        cursor = self._cursor(job_name, offset)
        with self.cloud_errors("read CloudWatch logs", job_name):
            try:
                streams = [
                    s["logStreamName"]
                    for page in self.logs.get_paginator("describe_log_streams").paginate(**self._streams_query(job_name))
                    for s in page.get("logStreams", [])
                ]
                if not streams:
                    return "", offset
                events = [
                    event
                    for page in self.logs.get_paginator("filter_log_events").paginate(
                        **self._events_query(streams, cursor)
                    )
                    for event in page.get("events", [])
                ]
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return "", offset  # the log group appears with the first job's first line
                raise
        return self._deliver(job_name, offset, cursor, events)

    async def aread_logs(self, job_name: str, offset: int = 0) -> tuple[str, int]:
        """:meth:`read_logs` through the logs hook's async (aiobotocore) client and its paginators."""
        from botocore.exceptions import ClientError

        cursor = self._cursor(job_name, offset)
        with self.cloud_errors("read CloudWatch logs", job_name):
            try:
                async with await self.logs_hook.get_async_conn() as client:
                    pages = client.get_paginator("describe_log_streams").paginate(**self._streams_query(job_name))
                    streams = [s["logStreamName"] async for page in pages for s in page.get("logStreams", [])]
                    if not streams:
                        return "", offset
                    pages = client.get_paginator("filter_log_events").paginate(**self._events_query(streams, cursor))
                    events = [event async for page in pages for event in page.get("events", [])]
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return "", offset
                raise
        return self._deliver(job_name, offset, cursor, events)

    def _cursor(self, job_name: str, offset: int) -> _LogCursor | None:
        cursor = self._log_cursors.get(job_name)
        return cursor if cursor is not None and cursor.lines == int(offset) else None

    @staticmethod
    def _streams_query(job_name: str) -> dict[str, Any]:
        return {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{job_name}/"}

    @staticmethod
    def _events_query(streams: list[str], cursor: _LogCursor | None) -> dict[str, Any]:
        query: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNames": streams}
        if cursor is not None:
            query["startTime"] = cursor.start_ms
        return query

    def _deliver(
        self, job_name: str, offset: int, cursor: _LogCursor | None, events: list[dict[str, Any]]
    ) -> tuple[str, int]:
        """The new lines of ``events`` (every event from the cursor's timestamp on, or the whole log)."""
        events = sorted(events, key=lambda ev: int(ev["timestamp"]))  # stable: each stream keeps its order
        if cursor is not None:
            new = [ev for ev in events if not (int(ev["timestamp"]) == cursor.start_ms and ev["eventId"] in cursor.seen)]
        else:
            new = events[int(offset) :]
        lines = int(offset) + len(new)
        if events:
            newest = int(events[-1]["timestamp"])
            seen = frozenset(ev["eventId"] for ev in events if int(ev["timestamp"]) == newest)
            self._log_cursors[job_name] = _LogCursor(lines, newest, seen)
        return "".join(ev["message"].rstrip("\n") + "\n" for ev in new), lines

    def log_location(self, job_name: str) -> str | None:
        return f"CloudWatch Logs group {LOG_GROUP}, streams {job_name}/* ({self.hook.conn_region_name})"

    def job_link_params(self, job_name: str) -> dict[str, str]:
        # As the provider's operators do: the hook's region and the partition it lies in (aws, aws-cn,
        # aws-us-gov), from which the link takes the console's domain.
        return {"region_name": self.hook.conn_region_name, "aws_partition": self.hook.conn_partition,
                "job_name": job_name}
