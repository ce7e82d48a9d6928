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

Credentials, region and endpoint come from the Airflow AWS connection (``connection_id``; its extra
``endpoint_url`` points every client at a fake cloud in tests and demos). Every client is bounded
(:func:`bounded_botocore_config`, docs/outages.md): botocore's ``standard`` retries, at most
:data:`MAX_ATTEMPTS` attempts of :data:`CONNECT_TIMEOUT_SECONDS` to connect and :data:`READ_TIMEOUT_SECONDS`
to answer, so a call to an unreachable or silent AWS fails within :data:`CALL_BOUND_SECONDS`; the
connection's extra ``config_kwargs`` (the Amazon provider's way) overrides any of them. Cloud errors are
re-raised as one message that quotes the cloud's reason and names the spec field or connection to fix;
refusals a retry cannot fix raise :class:`~airflow_retrain.training.base.TrainingInputError`.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

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
from airflow_retrain.training.sagemaker_catalog import DEFAULT_XGBOOST_VERSION, xgboost_image_uri

LOG_GROUP = "/aws/sagemaker/TrainingJobs"

# SecondaryStatus values before the container runs the script: the job holds no GPU time yet that
# the script could use (SageMaker bills from "Downloading" on, which BillableTimeInSeconds reflects).
_PENDING_SECONDARY = {"Starting", "Pending", "LaunchingMLInstances", "PreparingTrainingStack", "Downloading",
                      "DownloadingTrainingImage"}
_STATUS = {"Completed": JobState.COMPLETED, "Failed": JobState.FAILED, "Stopping": JobState.STOPPING,
           "Stopped": JobState.STOPPED}
_TAG_VALUE_BAD = re.compile(r"[^\w\s.:/=+\-@]")

#: Seconds botocore waits to open a connection to AWS, per attempt.
CONNECT_TIMEOUT_SECONDS = 5
#: Seconds botocore waits for an answer on an open connection (per socket read), per attempt.
READ_TIMEOUT_SECONDS = 20
#: Attempts per call (the first one included) in botocore's ``standard`` retry mode.
MAX_ATTEMPTS = 3
#: The longest one call can take against an unreachable or silent AWS: every attempt times out, plus
#: ``standard`` mode's backoff (at most 1 s, then 2 s, between attempts).
CALL_BOUND_SECONDS = MAX_ATTEMPTS * (CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS) + (2 ** (MAX_ATTEMPTS - 1) - 1)
_SOURCE_SKIP = {"__pycache__", ".ipynb_checkpoints", ".git"}


class _OutputsMissing(LookupError):
    pass


class SageMakerCloudError(RuntimeError):
    """The cloud failed a call for a reason that may pass (quota, throttling, network): retry the task."""


def bounded_botocore_config(hook: Any, *, max_attempts: int = MAX_ATTEMPTS, retry_mode: str = "standard") -> Any:
    """The botocore ``Config`` for a client of ``hook``'s connection: bounded timeouts and retries.

    Built from this module's bounds, then merged with the connection's own botocore config (its extra
    ``config_kwargs``, as the Amazon provider reads it: :attr:`AwsBaseHook.config`), so an operator can
    lengthen or shorten any of them per connection without touching the package.
    """
    from botocore.config import Config

    defaults = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        # total_max_attempts counts the first attempt; botocore's max_attempts would count only retries.
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
    )
    return defaults.merge(hook.config)


def timeouts_text(config: Any) -> str:
    """How a client with ``config`` gives up, for error messages."""
    retries = getattr(config, "retries", None) or {}
    attempts = retries.get("total_max_attempts")
    if attempts is None and "max_attempts" in retries:  # botocore's older key: retries after the first
        attempts = retries["max_attempts"] + 1
    return (
        f"{attempts or 'botocore default'} attempts ({config.connect_timeout} s to connect and "
        f"{config.read_timeout} s to answer, each)"
    )


def _ts(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else (float(value) if value else None)


def _s3_split(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def tag_value(value: str) -> str:
    """A tag value SageMaker accepts (letters, digits, spaces and ``_.:/=+-@``; at most 256 chars)."""
    return _TAG_VALUE_BAD.sub("_", str(value))[:256]


class SageMakerTrainingBackend(TrainingBackend):
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
    remote = True

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
        self._log_streams: dict[str, list[str]] = {}

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

    # -- clients, built on first use through the provider's hooks ---------------------------------

    @cached_property
    def hook(self):
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=self.connection_id, region_name=self.region)

    @cached_property
    def client_config(self):
        """The botocore config every client of this backend uses (bounded; the connection may override)."""
        return bounded_botocore_config(self.hook, max_attempts=self.max_attempts, retry_mode=self.retry_mode)

    def _client(self, hook: Any) -> Any:
        return hook.get_client_type(region_name=self.region, config=self.client_config)

    @cached_property
    def sagemaker(self):
        with self._cloud_errors("connect to SageMaker"):
            return self._client(self.hook)

    @cached_property
    def s3(self):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        with self._cloud_errors("connect to S3"):
            return self._client(S3Hook(aws_conn_id=self.connection_id, region_name=self.region))

    @cached_property
    def logs(self):
        from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook

        with self._cloud_errors("connect to CloudWatch Logs"):
            return self._client(AwsLogsHook(aws_conn_id=self.connection_id, region_name=self.region))

    @property
    def image_uri(self) -> str:
        if self.image:
            return self.image
        try:
            return xgboost_image_uri(self.region, self.framework_version)
        except LookupError as e:
            raise TrainingInputError(f"training.sagemaker.image: not set and {e}") from None

    def job_prefix(self, job_name: str) -> str:
        return f"{self.prefix}/{job_name}" if self.prefix else job_name

    # -- error translation --------------------------------------------------------------------------

    @contextmanager
    def _cloud_errors(self, action: str, job_name: str | None = None, request: TrainingJobRequest | None = None):
        """Turn boto errors into one message quoting the cloud's reason and naming what to fix."""
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            HTTPClientError,
            NoCredentialsError,
            NoRegionError,
            ParamValidationError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        what = f"{action}" + (f" (training job {job_name})" if job_name else "")
        conn = f"Airflow connection {self.connection_id!r}"
        try:
            yield
        except ClientError as e:
            err = e.response.get("Error", {})
            code, message = str(err.get("Code", "")), str(err.get("Message", e))
            quoted = f"{code}: {message}"
            if code == "ResourceLimitExceeded":
                itype = request.instance_type if request else "the instance type"
                count = request.instance_count if request else "?"
                raise SageMakerCloudError(
                    f"{what}: the account's quota for {itype} x{count} is used up ({quoted}); lower "
                    f"training.resources.instance_count/instance_type, raise the quota, or queue retrains "
                    f"with training.pool"
                ) from None
            if code in ("ThrottlingException", "Throttling", "SlowDown", "TooManyRequestsException"):
                raise SageMakerCloudError(
                    f"{what}: still throttled after {timeouts_text(self.client_config)} ({quoted})"
                ) from None
            if code in ("AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
                        "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException"):
                raise TrainingInputError(
                    f"{what}: access denied ({quoted}); check the credentials of {conn} and the permissions "
                    f"of training.sagemaker.role_arn {self.role_arn}"
                ) from None
            if code in ("NoSuchBucket",):
                raise TrainingInputError(f"{what}: training.sagemaker.bucket {self.bucket!r}: {quoted}") from None
            if code in ("ValidationException", "ValidationError", "InvalidParameterValue"):
                raise TrainingInputError(f"{what}: {self._field_for(message)}: {quoted}") from None
            if code.startswith(("InternalServer", "ServiceUnavailable", "InternalFailure")) or code.startswith("5"):
                raise SageMakerCloudError(f"{what}: the cloud failed ({quoted})") from None
            raise TrainingInputError(f"{what}: {quoted} ({conn})") from None
        except (EndpointConnectionError, BotoConnectionError, HTTPClientError) as e:
            # Refused, unreachable, or silent (read timeout, connection closed): after every attempt.
            raise SageMakerCloudError(
                f"{what}: cannot reach AWS after {timeouts_text(self.client_config)} ({e}); check {conn} "
                f"(region {self.region}, extra endpoint_url)"
            ) from None
        except (NoCredentialsError, NoRegionError) as e:
            raise TrainingInputError(f"{what}: {e}; set them in {conn}") from None
        except ParamValidationError as e:
            raise TrainingInputError(f"{what}: the request is invalid: {e}") from None

    @staticmethod
    def _field_for(message: str) -> str:
        low = message.lower()
        for needle, field in (
            ("role", "training.sagemaker.role_arn"),
            ("instancetype", "training.resources.instance_type"),
            ("instance type", "training.resources.instance_type"),
            ("instancecount", "training.resources.instance_count"),
            ("image", "training.sagemaker.image"),
            ("subnet", "training.sagemaker.subnets"),
            ("securitygroup", "training.sagemaker.security_group_ids"),
            ("kms", "training.sagemaker.kms_key_id"),
            ("volume", "training.sagemaker.volume_size_gb"),
            ("maxruntime", "training.resources.max_runtime_seconds"),
            ("hyperparameter", "training.hyperparameters"),
            ("s3", "training.sagemaker.bucket"),
        ):
            if needle in low:
                return field
        return "the training request"

    # -- the interface ------------------------------------------------------------------------------

    def _describe_raw(self, job_name: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        with self._cloud_errors("DescribeTrainingJob", job_name):
            try:
                return self.sagemaker.describe_training_job(TrainingJobName=job_name)
            except ClientError as e:
                err = e.response.get("Error", {})
                if err.get("Code") in ("ValidationException", "ResourceNotFound") and (
                    "could not find" in str(err.get("Message", "")).lower()
                ):
                    raise TrainingJobNotFound(f"no SageMaker training job {job_name!r} in {self.region}") from None
                raise

    def describe(self, job_name: str) -> TrainingJob:
        return self._job(self._describe_raw(job_name))

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
        """Stage the source and local channels, then create the job.

        A taken name raises :class:`TrainingJobExists` (SageMaker refuses duplicate names), so a retry
        that races its own earlier attempt reattaches instead of starting a second job.
        """
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
        staged: list[str] = []
        try:
            submit_dir = self._upload_source(name, entry.parent, staged)
            channels = {ch: self._channel_uri(name, ch, loc, staged) for ch, loc in request.channels.items()}
            params = self._create_params(request, image, submit_dir, channels)
            with self._cloud_errors("CreateTrainingJob", name, request):
                try:
                    self.sagemaker.create_training_job(**params)
                except ClientError as e:
                    err = e.response.get("Error", {})
                    if err.get("Code") in ("ResourceInUse", "ValidationException") and (
                        "unique" in str(err.get("Message", "")).lower()
                        or "already exists" in str(err.get("Message", "")).lower()
                    ):
                        # A taken name keeps its staged files: they are the existing job's inputs.
                        staged.clear()
                        raise TrainingJobExists(f"SageMaker training job {name!r} already exists") from None
                    raise
        except BaseException:
            self._delete_keys(staged)  # nothing half-done: no staged inputs without a job
            raise
        # The job as just created (a describe would cost one more call and say the same).
        return TrainingJob(
            job_name=name,
            backend=self.name,
            state=JobState.PENDING,
            instance_type=request.instance_type,
            instance_count=request.instance_count,
            created_at=time.time(),
            tags=dict(params["Tags"] and {t["Key"]: t["Value"] for t in params["Tags"]}),
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
                "S3Uri": f"s3://{self.bucket}/{self.job_prefix(request.job_name)}/checkpoints/",
                "LocalPath": "/opt/ml/checkpoints",
            }
        if self.subnets:
            params["VpcConfig"] = {"Subnets": self.subnets, "SecurityGroupIds": self.security_group_ids}
        return params

    def _upload_source(self, job_name: str, folder: Path, staged: list[str]) -> str:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                rel = path.relative_to(folder)
                if path.is_dir() or _SOURCE_SKIP.intersection(rel.parts) or path.suffix == ".pyc":
                    continue
                tar.add(path, arcname=str(rel))
        key = f"{self.job_prefix(job_name)}/source/sourcedir.tar.gz"
        with self._cloud_errors(f"upload the entry point's folder {folder} to s3://{self.bucket}/{key}", job_name):
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=buffer.getvalue())
        staged.append(key)
        return f"s3://{self.bucket}/{key}"

    def _channel_uri(self, job_name: str, channel: str, location: str, staged: list[str]) -> str:
        location = str(location)
        if location.startswith("s3://"):
            return location.rstrip("/") + "/"
        scheme = urlparse(location).scheme
        if scheme not in ("", "file"):
            raise TrainingInputError(
                f"training job {job_name}: channel {channel!r} at {location} is neither s3:// nor a local folder"
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
            key = f"{base}/{rel}"
            with self._cloud_errors(f"upload channel {channel!r} to s3://{self.bucket}/{key}", job_name):
                self.s3.upload_file(str(path), self.bucket, key)
            staged.append(key)
        return f"s3://{self.bucket}/{base}/"

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            try:
                self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk]})
            except Exception:  # noqa: BLE001 - best effort; the original error matters more
                pass

    def stop(self, job_name: str) -> TrainingJob:
        job = self.describe(job_name)
        if job.state.terminal or job.state == JobState.STOPPING:
            return job
        try:
            with self._cloud_errors("StopTrainingJob", job_name):
                self.sagemaker.stop_training_job(TrainingJobName=job_name)
        except TrainingInputError:
            # A job that finished between describe and stop is refused with a ValidationException.
            job = self.describe(job_name)
            if not (job.state.terminal or job.state == JobState.STOPPING):
                raise
        return self.describe(job_name)

    def find_jobs(self, tags: dict[str, str]) -> list[TrainingJob]:
        """Jobs carrying all ``tags``, through the Search API (one call per page of 100 jobs).

        Search is eventually consistent on AWS (a job may appear seconds after its creation): the operator
        therefore also probes the deterministic name it is about to create (``submit`` refuses a taken
        name with :class:`TrainingJobExists`, which the operator turns into a reattach).
        """
        wanted = {k: tag_value(v) for k, v in tags.items()}
        expression: dict[str, Any] = {}
        if wanted:
            expression = {
                "Filters": [{"Name": f"Tags.{k}", "Operator": "Equals", "Value": v} for k, v in wanted.items()],
                "Operator": "And",
            }
        jobs = []
        token = None
        with self._cloud_errors("search training jobs by tag"):
            while True:
                kwargs: dict[str, Any] = {"Resource": "TrainingJob", "MaxResults": 100}
                if expression:
                    kwargs["SearchExpression"] = expression
                if token:
                    kwargs["NextToken"] = token
                page = self.sagemaker.search(**kwargs)
                for result in page.get("Results", []):
                    desc = result.get("TrainingJob") or {}
                    job_tags = {t["Key"]: t["Value"] for t in desc.get("Tags") or []}
                    # Verify client-side as well: moto applies only the first tag filter.
                    if all(job_tags.get(k) == v for k, v in wanted.items()) and desc.get("TrainingJobName"):
                        jobs.append(self._job(desc, job_tags))
                token = page.get("NextToken")
                if not token:
                    break
        return sorted(jobs, key=lambda j: j.created_at or 0)

    def fetch_outputs(self, job_name: str, destination: Any) -> TrainingOutputs:
        """Download and unpack ``model.tar.gz`` and ``output.tar.gz`` under ``destination``.

        The outputs lie where this backend told SageMaker to write them (``S3OutputPath/<job>/output/``),
        so no describe call (and no SageMaker client) is needed unless they are missing.

        :param destination: a folder as ``Path`` or ``ObjectStoragePath`` (anything with ``/``, ``mkdir``
            and ``write_bytes``); the files land in ``destination/model`` and ``destination/output``.
        """
        base = f"s3://{self.bucket}/{self.job_prefix(job_name)}/output"
        model_dir, output_dir = destination / "model", destination / "output"
        try:
            self._unpack(job_name, f"{base}/model.tar.gz", model_dir, "model (SM_MODEL_DIR)")
            self._unpack(job_name, f"{base}/output.tar.gz", output_dir, "output data (SM_OUTPUT_DATA_DIR, metrics.json)")
        except _OutputsMissing as missing:
            job = self.describe(job_name)
            if job.state != JobState.COMPLETED:
                raise RuntimeError(f"training job {job_name} is {job.state.value}, not Completed: no outputs") from None
            raise TrainingOutputsMissing(f"training job {job_name} completed but {missing}") from None
        from airflow_retrain.artifacts import to_uri

        return TrainingOutputs(model_uri=to_uri(model_dir), output_uri=to_uri(output_dir))

    def _unpack(self, job_name: str, uri: str, target: Any, what: str) -> None:
        from botocore.exceptions import ClientError

        bucket, key = _s3_split(uri)
        with self._cloud_errors(f"download {uri}", job_name):
            try:
                body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as e:
                err = e.response.get("Error", {})
                if err.get("Code") in ("NoSuchKey", "404", "NotFound"):
                    raise _OutputsMissing(
                        f"its {what} is missing from S3: {uri} ({err.get('Code')}: {err.get('Message', '')})"
                    ) from None
                raise
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                rel = PurePosixPath(member.name)
                if rel.is_absolute() or ".." in rel.parts:
                    raise RuntimeError(f"training job {job_name}: {uri} holds an unsafe path {member.name!r}")
                rel = PurePosixPath(*[p for p in rel.parts if p != "."])
                dest = target
                for part in rel.parts[:-1]:
                    dest = dest / part
                dest.mkdir(parents=True, exist_ok=True)
                (dest / rel.parts[-1]).write_bytes(tar.extractfile(member).read())

    def read_logs(self, job_name: str, offset: int = 0) -> tuple[str, int]:
        """CloudWatch log lines of the job's streams (``<job name>/algo-N-...``) after ``offset``.

        ``offset`` packs the timestamp (ms) of the last line read and how many lines with that timestamp
        were read: ``timestamp * 10_000 + count``. The stream list is cached until every instance has one.
        """
        from botocore.exceptions import ClientError

        last_ts, seen = divmod(int(offset), 10_000)
        streams = self._log_streams.get(job_name)
        events: list[dict[str, Any]] = []
        with self._cloud_errors("read CloudWatch logs", job_name):
            try:
                if not streams:
                    found = self.logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job_name}/")
                    streams = [s["logStreamName"] for s in found.get("logStreams", [])]
                    if not streams:
                        return "", offset
                    self._log_streams[job_name] = streams
                kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNames": streams, "interleaved": True}
                if last_ts:
                    kwargs["startTime"] = last_ts
                while True:
                    page = self.logs.filter_log_events(**kwargs)
                    events.extend(page.get("events", []))
                    if not page.get("nextToken") or not page.get("events"):
                        break
                    kwargs["nextToken"] = page["nextToken"]
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return "", offset  # the log group appears with the first job's first line
                raise
        events.sort(key=lambda ev: ev["timestamp"])
        lines = []
        for event in events:
            ts = int(event["timestamp"])
            if ts < last_ts:
                continue
            if ts == last_ts:
                if seen > 0:
                    seen -= 1
                    continue
            lines.append(event["message"].rstrip("\n"))
        if events:
            # Events are re-read from last_ts on: the count at the newest timestamp covers old and new.
            new_last = int(events[-1]["timestamp"])
            count = sum(1 for ev in events if int(ev["timestamp"]) == new_last)
            offset = new_last * 10_000 + min(count, 9_999)
        return "".join(line + "\n" for line in lines), offset

    def cleanup(self, job_name: str) -> list[str]:
        """Delete what submit staged (source and uploaded channels); keep outputs and the job's record."""
        removed = []
        for part in ("source", "input"):
            prefix = f"{self.job_prefix(job_name)}/{part}/"
            with self._cloud_errors(f"list s3://{self.bucket}/{prefix}", job_name):
                pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
                keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
            if keys:
                self._delete_keys(keys)
                removed.append(f"s3://{self.bucket}/{prefix}")
        self._log_streams.pop(job_name, None)
        return removed

    def log_location(self, job_name: str) -> str | None:
        return f"CloudWatch Logs group /aws/sagemaker/TrainingJobs, streams {job_name}/* ({self.hook.conn_region_name})"

    def job_link_params(self, job_name: str) -> dict[str, str]:
        # As the provider's operators do: the hook's region and the partition it lies in (aws, aws-cn,
        # aws-us-gov), from which the link takes the console's domain.
        return {"region_name": self.hook.conn_region_name, "aws_partition": self.hook.conn_partition,
                "job_name": job_name}
