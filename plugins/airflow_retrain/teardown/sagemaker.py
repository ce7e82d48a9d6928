"""SageMaker resources for the sweep: training and processing jobs, endpoints, notebook instances.

One inventory per AWS account (an Airflow AWS connection) and region, with boto3 clients built by the
Amazon provider's hooks (credentials, role assumption and ``endpoint_url`` come from the connection).
Clients are bounded like the training backend's (:func:`~airflow_retrain.training.sagemaker_errors.bounded_botocore_config`:
5 s to connect, 20 s to answer), with :data:`SWEEP_MAX_ATTEMPTS` attempts in botocore's ``standard`` mode so
throttling under many parallel reads is retried with backoff; the connection's extra ``config_kwargs``
overrides them. Every API call is counted (``api_calls``) so the benchmark can report calls per
resource.

What counts as idle (a *finding*):

- training / processing job ``InProgress``: past its TTL tag, or running longer than the policy's
  ``max_runtime`` for the kind (default: the job's own ``StoppingCondition.MaxRuntimeInSeconds``);
- endpoint ``InService``: past its TTL, or zero ``Invocations`` (CloudWatch ``AWS/SageMaker``, summed over
  its variants) over the idle window, once it is older than the window; one ``GetMetricData`` call
  queries up to 500 variants;
- notebook instance ``InService``: past its TTL, or in service longer than the idle window since it was
  last started (``LastModifiedTime``): SageMaker exposes no kernel activity, so the kind's idle window is
  long by default (8 h) and the grace period lets its owner tag it ``retrain:keep=true``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from botocore.exceptions import ClientError

from airflow_retrain.teardown.base import Clock, Finding, Inventory, Resource, ResourceGone, ttl_expired

_RUNNING = {
    "sagemaker.training_job": "InProgress",
    "sagemaker.processing_job": "InProgress",
    "sagemaker.endpoint": "InService",
    "sagemaker.notebook_instance": "InService",
}
_METRIC_QUERIES_PER_CALL = 500  # GetMetricData's limit


#: Attempts per call (the first included): more than a training poll's, since a sweep reads many resources
#: in parallel and is throttled more; bounded, so a lost cloud fails the sweep's call within
#: 5 x (5 s + 20 s) + 15 s of backoff = 140 s instead of hanging the task.
SWEEP_MAX_ATTEMPTS = 5


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def is_gone_error(error: ClientError) -> bool:
    """SageMaker answers ``ValidationException``/``ResourceNotFound`` for a resource that no longer exists."""
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "").lower()
    return code in ("ResourceNotFound", "ResourceNotFoundException") or (
        code == "ValidationException" and ("could not find" in message or "does not exist" in message)
    )


def _error_text(error: Exception) -> str:
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        return f"{err.get('Code', 'ClientError')}: {err.get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}"


class SageMakerInventory(Inventory):
    """SageMaker resources of one AWS account and region.

    :param connection_id: Airflow connection of type ``aws``.
    :param region: AWS region to sweep.
    :param read_threads: parallel reads (tags, describes); writes (marks, actions) stay sequential.
    """

    name = "sagemaker"
    kinds = tuple(_RUNNING)

    def __init__(
        self,
        policy: Any,
        clock: Clock | None = None,
        connection_id: str = "aws_default",
        region: str = "us-east-1",
        read_threads: int = 8,
    ):
        super().__init__(policy, clock)
        self.connection_id = connection_id
        self.region = region
        self.read_threads = read_threads
        self._lock = threading.Lock()

    @classmethod
    def from_policy(cls, policy: Any, clock: Clock | None = None) -> list[Inventory]:
        return [cls(policy, clock, account.connection_id, region) for account in policy.aws for region in account.regions]

    @property
    def location(self) -> str:
        return f"{self.connection_id}/{self.region}"

    def _count_call(self, **_: Any) -> None:
        with self._lock:
            self.api_calls += 1

    def _map(self, fn, items: list) -> list:
        """``fn`` over ``items`` on a few threads (boto3 clients are thread-safe): reads run in parallel."""
        if len(items) < 2 or self.read_threads < 2:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.read_threads, thread_name_prefix="teardown-read") as pool:
            return list(pool.map(fn, items))

    def _client(self, client_type: str):
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        from airflow_retrain.training.sagemaker_errors import bounded_botocore_config

        hook = AwsBaseHook(aws_conn_id=self.connection_id, client_type=client_type, region_name=self.region)
        client = hook.get_client_type(
            region_name=self.region, config=bounded_botocore_config(hook, max_attempts=SWEEP_MAX_ATTEMPTS)
        )
        client.meta.events.register("before-call", self._count_call)
        return client

    @cached_property
    def sagemaker(self):
        """The SageMaker client (built on first use, from the AWS connection)."""
        return self._client("sagemaker")

    @cached_property
    def cloudwatch(self):
        return self._client("cloudwatch")

    # -- listing -------------------------------------------------------------------------------------
    def _list(self, kind: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(name, arn, summary) of the kind's running resources, all pages."""
        op, items, name_key, arn_key = {
            "sagemaker.training_job": ("list_training_jobs", "TrainingJobSummaries", "TrainingJobName", "TrainingJobArn"),
            "sagemaker.processing_job": (
                "list_processing_jobs", "ProcessingJobSummaries", "ProcessingJobName", "ProcessingJobArn"
            ),
            "sagemaker.endpoint": ("list_endpoints", "Endpoints", "EndpointName", "EndpointArn"),
            "sagemaker.notebook_instance": (
                "list_notebook_instances", "NotebookInstances", "NotebookInstanceName", "NotebookInstanceArn"
            ),
        }[kind]
        pages = self.sagemaker.get_paginator(op).paginate(
            StatusEquals=_RUNNING[kind], PaginationConfig={"PageSize": 100}
        )
        for page in pages:
            for summary in page.get(items, []):
                yield summary[name_key], summary[arn_key], summary

    def _tags(self, arn: str) -> dict[str, str]:
        pages = self.sagemaker.get_paginator("list_tags").paginate(ResourceArn=arn, PaginationConfig={"PageSize": 100})
        return {t["Key"]: t["Value"] for page in pages for t in page.get("Tags", [])}

    def resources(self) -> Iterable[Resource]:
        listed = [
            (kind, name, arn, summary)
            for kind in self.kinds
            if self.policy.enabled(kind)
            for name, arn, summary in self._list(kind)
        ]

        def read_tags(item) -> dict[str, str] | None:
            try:
                return self._tags(item[2])
            except ClientError as e:
                if is_gone_error(e):
                    return None  # went away between listing and reading its tags: nothing to sweep
                raise

        for (kind, name, arn, summary), tags in zip(listed, self._map(read_tags, listed), strict=True):
            if tags is None:
                continue
            yield Resource(
                kind=kind,
                name=name,
                location=self.location,
                state=_RUNNING[kind],
                tags=tags,
                started_at=_epoch(summary.get("CreationTime")),
                backend="sagemaker",
                instance_type=summary.get("InstanceType"),
                arn=arn,
                details={"region": self.region},
            )

    # -- judging -------------------------------------------------------------------------------------
    def _describe(self, resource: Resource) -> dict[str, Any]:
        """Describe the resource and fill in what pricing needs; raise :class:`ResourceGone`."""
        sm = self.sagemaker
        try:
            if resource.kind == "sagemaker.training_job":
                d = sm.describe_training_job(TrainingJobName=resource.name)
                status = d["TrainingJobStatus"]
                rc = d.get("ResourceConfig", {})
                resource.instance_type = rc.get("InstanceType")
                resource.instance_count = int(rc.get("InstanceCount", 1))
                resource.started_at = _epoch(d.get("TrainingStartTime") or d.get("CreationTime"))
                resource.details["max_runtime_seconds"] = d.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
                if d.get("EnableManagedSpotTraining"):
                    resource.details["pricing"] = "spot"
            elif resource.kind == "sagemaker.processing_job":
                d = sm.describe_processing_job(ProcessingJobName=resource.name)
                status = d["ProcessingJobStatus"]
                cluster = d.get("ProcessingResources", {}).get("ClusterConfig", {})
                resource.instance_type = cluster.get("InstanceType")
                resource.instance_count = int(cluster.get("InstanceCount", 1))
                resource.started_at = _epoch(d.get("ProcessingStartTime") or d.get("CreationTime"))
                resource.details["max_runtime_seconds"] = d.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
            elif resource.kind == "sagemaker.endpoint":
                d = sm.describe_endpoint(EndpointName=resource.name)
                status = d["EndpointStatus"]
                resource.started_at = _epoch(d.get("CreationTime"))
                resource.details["endpoint_config"] = d.get("EndpointConfigName")
                resource.details["variants"] = [v["VariantName"] for v in d.get("ProductionVariants", [])]
                if "variant_instances" not in resource.details and d.get("EndpointConfigName"):
                    config = sm.describe_endpoint_config(EndpointConfigName=d["EndpointConfigName"])
                    resource.details["variant_instances"] = [
                        [v.get("InstanceType"), int(v.get("InitialInstanceCount", 1))]
                        for v in config.get("ProductionVariants", [])
                        if v.get("InstanceType")
                    ]
                variants = resource.details.get("variant_instances") or []
                if variants:
                    resource.instance_type = variants[0][0]
                    resource.instance_count = sum(count for _, count in variants)
            else:
                d = sm.describe_notebook_instance(NotebookInstanceName=resource.name)
                status = d["NotebookInstanceStatus"]
                resource.instance_type = d.get("InstanceType")
                resource.started_at = _epoch(d.get("LastModifiedTime") or d.get("CreationTime"))
        except ClientError as e:
            if is_gone_error(e):
                raise ResourceGone(f"{resource.kind} {resource.name} no longer exists") from None
            raise
        resource.state = status
        if status != _RUNNING[resource.kind]:
            raise ResourceGone(f"{resource.kind} {resource.name} is {status} now")
        return d

    def assess(self, resources: list[Resource], refreshed: bool = False) -> dict[str, Finding]:
        now = self.clock()
        findings: dict[str, Finding] = {}
        endpoints: list[Resource] = []

        def describe(resource: Resource) -> Finding | None:
            try:
                if not refreshed:
                    self._describe(resource)
            except ResourceGone as e:
                return Finding(False, str(e), {"gone": True})
            except ClientError as e:
                return Finding(False, f"could not describe: {_error_text(e)}", {"error": _error_text(e)})
            return None

        for resource, failed in zip(resources, self._map(describe, resources), strict=True):
            if failed is not None:
                findings[resource.key] = failed
                continue
            expired, ttl_evidence = ttl_expired(resource.tags, self.policy.tags.ttl, now)
            uptime = resource.uptime(now)
            if expired:
                findings[resource.key] = Finding(True, "past its TTL", {**ttl_evidence, "uptime_seconds": round(uptime)})
            elif resource.kind.endswith("_job"):
                limit = self.policy.kind(resource.kind).max_runtime or resource.details.get("max_runtime_seconds")
                evidence = {**ttl_evidence, "uptime_seconds": round(uptime), "max_runtime_seconds": limit}
                if limit and uptime > limit:
                    findings[resource.key] = Finding(True, "running longer than its maximum runtime", evidence)
                else:
                    findings[resource.key] = Finding(False, "running within its TTL and maximum runtime", evidence)
            elif resource.kind == "sagemaker.notebook_instance":
                window = self.policy.idle_window_for(resource.kind)
                evidence = {**ttl_evidence, "in_service_seconds": round(uptime), "idle_window_seconds": window}
                if uptime >= window:
                    findings[resource.key] = Finding(True, "in service longer than the idle window", evidence)
                else:
                    findings[resource.key] = Finding(False, "started within the idle window", evidence)
            else:
                endpoints.append(resource)
        if endpoints:
            findings.update(self._assess_endpoints(endpoints, now))
        return findings

    def _assess_endpoints(self, endpoints: list[Resource], now: float) -> dict[str, Finding]:
        findings: dict[str, Finding] = {}
        queries, owners = [], {}
        for resource in endpoints:
            window = self.policy.idle_window_for(resource.kind)
            if resource.uptime(now) < window:
                findings[resource.key] = Finding(
                    False, "younger than the idle window", {"age_seconds": round(resource.uptime(now)), "idle_window_seconds": window}
                )
                continue
            for variant in resource.details.get("variants") or []:
                query_id = f"q{len(queries)}"
                owners[query_id] = resource
                queries.append(
                    {
                        "Id": query_id,
                        "MetricStat": {
                            "Metric": {
                                "Namespace": "AWS/SageMaker",
                                "MetricName": "Invocations",
                                "Dimensions": [
                                    {"Name": "EndpointName", "Value": resource.name},
                                    {"Name": "VariantName", "Value": variant},
                                ],
                            },
                            "Period": max(60, int(window // 60) * 60),
                            "Stat": "Sum",
                        },
                        "ReturnData": True,
                    }
                )
        invocations: dict[str, float] = {}
        failed: dict[str, str] = {}
        window = self.policy.idle_window_for("sagemaker.endpoint")
        start = datetime.fromtimestamp(now - window, UTC)
        end = datetime.fromtimestamp(now, UTC)
        for offset in range(0, len(queries), _METRIC_QUERIES_PER_CALL):
            chunk = queries[offset : offset + _METRIC_QUERIES_PER_CALL]
            try:
                pages = self.cloudwatch.get_paginator("get_metric_data").paginate(
                    MetricDataQueries=chunk, StartTime=start, EndTime=end
                )
                for page in pages:
                    for result in page.get("MetricDataResults", []):
                        resource = owners[result["Id"]]
                        invocations[resource.key] = invocations.get(resource.key, 0.0) + sum(result.get("Values", []))
            except ClientError as e:
                for query in chunk:
                    failed[owners[query["Id"]].key] = _error_text(e)
        for resource in endpoints:
            if resource.key in findings:
                continue
            if resource.key in failed:
                # No metrics, no verdict: an endpoint is never deleted on missing evidence.
                findings[resource.key] = Finding(
                    False, f"could not read Invocations: {failed[resource.key]}", {"error": failed[resource.key]}
                )
                continue
            count = invocations.get(resource.key, 0.0)
            evidence = {
                "invocations": count,
                "idle_window_seconds": self.policy.idle_window_for(resource.kind),
                "variants": resource.details.get("variants"),
                "age_seconds": round(resource.uptime(now)),
            }
            if count == 0:
                findings[resource.key] = Finding(True, "zero Invocations over the idle window", evidence)
            else:
                findings[resource.key] = Finding(False, f"{count:g} Invocations over the idle window", evidence)
        return findings

    def refresh(self, resource: Resource) -> Resource:
        fresh = Resource(**{**resource.to_dict(), "details": dict(resource.details)})
        self._describe(fresh)
        try:
            fresh.tags = self._tags(resource.arn)
        except ClientError as e:
            if is_gone_error(e):
                raise ResourceGone(f"{resource.kind} {resource.name} no longer exists") from None
            raise
        return fresh

    # -- writing -------------------------------------------------------------------------------------
    def set_tag(self, resource: Resource, key: str, value: str) -> None:
        # AddTags overwrites a key on AWS (moto appends a duplicate; reading keeps the newest, the last).
        self.sagemaker.add_tags(ResourceArn=resource.arn, Tags=[{"Key": key, "Value": value}])
        resource.tags[key] = value

    def remove_tag(self, resource: Resource, key: str) -> None:
        self.sagemaker.delete_tags(ResourceArn=resource.arn, TagKeys=[key])
        resource.tags.pop(key, None)

    def act(self, resource: Resource, action: str) -> str:
        sm = self.sagemaker
        try:
            if resource.kind == "sagemaker.training_job" and action == "stop":
                sm.stop_training_job(TrainingJobName=resource.name)
                return "stopped training job"
            if resource.kind == "sagemaker.processing_job" and action == "stop":
                sm.stop_processing_job(ProcessingJobName=resource.name)
                return "stopped processing job"
            if resource.kind == "sagemaker.notebook_instance" and action == "stop":
                sm.stop_notebook_instance(NotebookInstanceName=resource.name)
                return "stopped notebook instance"
            if resource.kind == "sagemaker.endpoint" and action == "delete":
                sm.delete_endpoint(EndpointName=resource.name)
                config = resource.details.get("endpoint_config")
                if not config:
                    return "deleted endpoint"
                try:
                    sm.delete_endpoint_config(EndpointConfigName=config)
                except ClientError as e:
                    if not is_gone_error(e):
                        return f"deleted endpoint; could not delete endpoint config {config}: {_error_text(e)}"
                return f"deleted endpoint and endpoint config {config}"
        except ClientError as e:
            if is_gone_error(e):
                raise ResourceGone(f"{resource.kind} {resource.name} no longer exists") from None
            raise
        raise ValueError(f"{resource.kind} has no action {action!r}")
