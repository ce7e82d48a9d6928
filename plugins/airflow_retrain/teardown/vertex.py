"""Vertex AI resources for the sweep: custom jobs and endpoints.

One inventory per Google Cloud project and Vertex AI region, through the Google provider's hooks
(:class:`~airflow_retrain.hooks.vertex_ai.VertexJobHook`, :class:`~airflow_retrain.hooks.vertex_ai.VertexEndpointHook`:
credentials, project and the ``api_endpoint`` extras come from the Airflow connection). Labels are read
in the package's portable label form (``retrain_expires-at`` is the tag ``retrain:expires-at``, see
:func:`airflow_retrain.runs.label_key`).

What counts as idle (a *finding*):

- custom job queued, pending or running: past its TTL label, or running longer than the policy's
  ``max_runtime`` for ``vertex.custom_job`` (default: the job's own ``scheduling.timeout``). Action:
  ``cancel`` (``CancelCustomJob``);
- endpoint: past its TTL label. Vertex bills an endpoint for its deployed models' replicas; traffic is in
  Cloud Monitoring, which the sweep does not read, so an endpoint is never judged idle by its traffic.
  Action: ``delete`` (each deployed model undeployed, then the endpoint deleted: Vertex refuses to delete
  an endpoint that still has models).

Where the marks live: a custom job's labels cannot change after creation (``JobService`` has no update
method), so its mark and claim are kept in the sweep's own store (:class:`~.marks.FileMarks`, the
worker's state dir). An endpoint's labels can (``UpdateEndpoint``): its mark and claim are labels
(``retrain_teardown-planned=delete_<epoch>``: ``@`` is not allowed in a label value), written with the
endpoint's ``etag``, so a claim written over another sweep's fails instead of replacing it.

Cost: a job's replicas are priced per worker pool by the cost model (machine + GPUs, see
:func:`airflow_retrain.training.vertex_catalog.price_key`); an endpoint's deployed models by their
dedicated resources (minimum replicas) at the same machine prices, an estimate: Vertex's prediction
prices differ from its training prices.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import cached_property
from typing import Any

from airflow_retrain.config import state_dir
from airflow_retrain.runs import from_labels, label_key, label_value
from airflow_retrain.teardown.base import Clock, Finding, Inventory, Resource, ResourceGone, ttl_expired
from airflow_retrain.teardown.marks import FileMarks

#: Custom job states in which a job holds (or is about to hold) machines.
LIVE_JOB_STATES = ("JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING")
#: Seconds one Vertex AI call may take (retries of UNAVAILABLE included).
CALL_TIMEOUT = 30.0
#: Label writes retried after an etag mismatch (another writer between our read and our write).
LABEL_WRITE_ATTEMPTS = 3


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime) and value.timestamp() > 0:
        return value.timestamp()
    return None


def _accelerator(machine_spec: Any) -> str | None:
    name = machine_spec.accelerator_type.name if machine_spec.accelerator_type else None
    return None if name in (None, "ACCELERATOR_TYPE_UNSPECIFIED") else name


def _replica_prices(specs: Iterable[tuple[Any, int]]) -> list[list[Any]]:
    """``[[price key, replicas], ...]`` of ``(machine_spec, replicas)`` pairs (the sweep's ``variant_instances``)."""
    from airflow_retrain.training.vertex_catalog import price_key

    return [
        [price_key(ms.machine_type, _accelerator(ms), int(ms.accelerator_count)), replicas]
        for ms, replicas in specs
        if ms.machine_type and replicas > 0
    ]


class VertexInventory(Inventory):
    """Vertex AI custom jobs and endpoints of one project and region.

    :param connection_id: Airflow connection of type ``google_cloud_platform``.
    :param project: the project to sweep (default: the connection's).
    :param region: the Vertex AI location.
    :param marks: where custom jobs' marks live (default: ``<state dir>/teardown/vertex-marks``).
    """

    name = "vertex"
    kinds = ("vertex.custom_job", "vertex.endpoint")

    def __init__(
        self,
        policy: Any,
        clock: Clock | None = None,
        connection_id: str = "google_cloud_default",
        project: str | None = None,
        region: str = "us-central1",
        marks: FileMarks | None = None,
    ) -> None:
        super().__init__(policy, clock)
        self.connection_id = connection_id
        self.project = project
        self.region = region
        self._marks = marks
        self._lock = threading.Lock()

    @classmethod
    def from_policy(cls, policy: Any, clock: Clock | None = None) -> list[Inventory]:
        return [
            cls(policy, clock, entry.connection_id, project, region)
            for entry in policy.gcp
            for project in (entry.projects or [None])
            for region in entry.regions
        ]

    @property
    def location(self) -> str:
        return f"{self.connection_id}/{self.project or '(connection project)'}/{self.region}"

    @cached_property
    def marks(self) -> FileMarks:
        return self._marks or FileMarks(state_dir() / "teardown" / "vertex-marks", self.policy.tags.claim)

    # -- clients -------------------------------------------------------------------------------------
    @cached_property
    def job_hook(self):
        from airflow_retrain.hooks.vertex_ai import VertexJobHook

        return VertexJobHook(gcp_conn_id=self.connection_id)

    @cached_property
    def endpoint_hook(self):
        from airflow_retrain.hooks.vertex_ai import VertexEndpointHook

        return VertexEndpointHook(gcp_conn_id=self.connection_id)

    @cached_property
    def project_id(self) -> str:
        project = self.project or self.job_hook.project_id
        if not project:
            raise ValueError(f"Airflow connection {self.connection_id!r} names no project; set gcp[].projects in the policy")
        return str(project)

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        with self._lock:
            self.api_calls += 1
        return fn(project_id=self.project_id, region=self.region, timeout=CALL_TIMEOUT, **kwargs)

    # -- labels <-> tags -----------------------------------------------------------------------------
    def _tags(self, labels: dict[str, str]) -> dict[str, str]:
        """Labels in tag form, under the policy's tag names (which may be custom), marks decoded."""
        names = self.policy.tags
        tags = from_labels(labels)
        for key in (names.scope, names.pipeline, names.ttl, names.owner, names.exempt, names.planned, names.claim):
            if key and (value := labels.get(label_key(key))) is not None:
                tags[key] = value
        for key in (names.planned, names.claim):
            if key in tags and "_" in tags[key]:
                head, _, when = tags[key].rpartition("_")
                tags[key] = f"{head}@{when}"  # the label form of "<action or sweep id>@<epoch>"
        return tags

    # -- listing -------------------------------------------------------------------------------------
    def _resource(self, kind: str, item: Any, state: str, started_at: float | None,
                  replicas: Iterable[tuple[Any, int]], **details: Any) -> Resource:
        """A custom job or endpoint ``item`` as a :class:`Resource`; ``replicas``: (machine spec, count)."""
        variants = _replica_prices(replicas)
        return Resource(
            kind=kind,
            name=f"{item.display_name}#{item.name.rsplit('/', 1)[-1]}",
            location=self.location,
            state=state,
            tags=self._tags(dict(item.labels)),
            started_at=started_at,
            backend="vertex",
            instance_type=variants[0][0] if variants else None,
            instance_count=sum(n for _, n in variants) or 1,
            arn=item.name,
            details={"region": self.region, "variant_instances": variants, **details},
        )

    def _job_resource(self, cj: Any) -> Resource:
        timeout = cj.job_spec.scheduling.timeout
        resource = self._resource(
            "vertex.custom_job", cj, cj.state.name, _epoch(cj.start_time) or _epoch(cj.create_time),
            ((p.machine_spec, int(p.replica_count)) for p in cj.job_spec.worker_pool_specs),
            max_runtime_seconds=timeout.total_seconds() if timeout else None,
        )
        if cj.job_spec.scheduling.strategy.name == "SPOT":
            resource.details["pricing"] = "spot"
        resource.tags.update(self.marks.read(resource))
        return resource

    def _endpoint_resource(self, ep: Any) -> Resource:
        return self._resource(
            "vertex.endpoint", ep, "DEPLOYED" if ep.deployed_models else "EMPTY", _epoch(ep.create_time),
            ((m.dedicated_resources.machine_spec, int(m.dedicated_resources.min_replica_count))
             for m in ep.deployed_models),
            deployed_models=[m.id for m in ep.deployed_models], etag=ep.etag, labels=dict(ep.labels),
        )

    def _pages(self, fn: Callable[..., Any], items: str) -> Iterable[Any]:
        pager = self._call(fn, page_size=100, page_token=None, filter=None, read_mask=None)
        for number, page in enumerate(pager.pages):
            if number:  # the first page was counted by _call
                with self._lock:
                    self.api_calls += 1
            yield from getattr(page, items)

    def resources(self) -> Iterable[Resource]:
        if self.policy.enabled("vertex.custom_job"):
            live = [
                self._job_resource(cj)
                for cj in self._pages(self.job_hook.list_custom_jobs, "custom_jobs")
                if cj.state.name in LIVE_JOB_STATES
            ]
            # Marks of jobs that ended (cancelled, finished) are forgotten: nothing of theirs bills.
            self.marks.prune("vertex.custom_job", self.location, {r.key for r in live})
            yield from live
        if self.policy.enabled("vertex.endpoint"):
            for ep in self._pages(self.endpoint_hook.list_endpoints, "endpoints"):
                yield self._endpoint_resource(ep)

    # -- judging -------------------------------------------------------------------------------------
    def assess(self, resources: list[Resource], refreshed: bool = False) -> dict[str, Finding]:
        # ListCustomJobs and ListEndpoints return whole records: nothing to describe again.
        now = self.clock()
        findings: dict[str, Finding] = {}
        for resource in resources:
            expired, ttl_evidence = ttl_expired(resource.tags, self.policy.tags.ttl, now)
            evidence = {**ttl_evidence, "uptime_seconds": round(resource.uptime(now)), "state": resource.state}
            if expired:
                findings[resource.key] = Finding(True, "past its TTL", evidence)
            elif resource.kind == "vertex.custom_job":
                limit = self.policy.kind(resource.kind).max_runtime or resource.details.get("max_runtime_seconds")
                evidence["max_runtime_seconds"] = limit
                if limit and resource.uptime(now) > limit:
                    findings[resource.key] = Finding(True, "running longer than its maximum runtime", evidence)
                else:
                    findings[resource.key] = Finding(False, "running within its TTL and maximum runtime", evidence)
            else:
                evidence["deployed_models"] = len(resource.details.get("deployed_models", []))
                findings[resource.key] = Finding(False, "within its TTL", evidence)
        return findings

    def refresh(self, resource: Resource) -> Resource:
        from google.api_core import exceptions as gexc

        try:
            if resource.kind == "vertex.custom_job":
                cj = self._call(self.job_hook.get_custom_job, custom_job=resource.arn.rsplit("/", 1)[-1])
                if cj.state.name not in LIVE_JOB_STATES:
                    raise ResourceGone(f"custom job {resource.name} is {cj.state.name} now")
                return self._job_resource(cj)
            ep = self._call(self.endpoint_hook.get_endpoint, endpoint=resource.arn.rsplit("/", 1)[-1])
            return self._endpoint_resource(ep)
        except gexc.NotFound:
            raise ResourceGone(f"{resource.kind} {resource.name} no longer exists") from None

    # -- writing -------------------------------------------------------------------------------------
    def set_tag(self, resource: Resource, key: str, value: str) -> None:
        if resource.kind == "vertex.custom_job":
            if self.marks.set(resource, key, value):
                resource.tags[key] = value
            return
        if self._write_label(resource, key, value):
            resource.tags[key] = value

    def remove_tag(self, resource: Resource, key: str) -> None:
        if resource.kind == "vertex.custom_job":
            self.marks.remove(resource, key)
        else:
            self._write_label(resource, key, None)
        resource.tags.pop(key, None)

    def _write_label(self, resource: Resource, key: str, value: str | None) -> bool:
        """Set (``value``) or remove (``None``) one label of an endpoint with a compare-and-set on its etag.

        The claim is written against the etag the sweep saw when it decided: if anyone changed the
        endpoint since (another sweep's claim), the write fails and the claim stays theirs (``False``).
        Other labels are re-read and written again after a mismatch.
        """
        from google.api_core import exceptions as gexc

        label = label_key(key)
        encoded = None if value is None else label_value(value.replace("@", "_"))
        labels, etag = dict(resource.details.get("labels", {})), resource.details.get("etag", "")
        for attempt in range(LABEL_WRITE_ATTEMPTS):
            if encoded is None:
                labels.pop(label, None)
            else:
                labels[label] = encoded
            try:
                ep = self._call(
                    self.endpoint_hook.update_endpoint,
                    endpoint_id=resource.arn.rsplit("/", 1)[-1],
                    endpoint={"labels": labels, "etag": etag},
                    update_mask={"paths": ["labels"]},
                )
            except gexc.NotFound:
                raise ResourceGone(f"{resource.kind} {resource.name} no longer exists") from None
            except gexc.Aborted:
                if key == self.policy.tags.claim:
                    return False  # another sweep wrote first: the claim stays theirs
                if attempt == LABEL_WRITE_ATTEMPTS - 1:
                    raise
                fresh = self.refresh(resource)
                labels, etag = dict(fresh.details["labels"]), fresh.details["etag"]
                continue
            resource.details["labels"], resource.details["etag"] = dict(ep.labels), ep.etag
            return True
        return False

    def act(self, resource: Resource, action: str) -> str:
        from google.api_core import exceptions as gexc

        try:
            if resource.kind == "vertex.custom_job" and action == "cancel":
                self._call(self.job_hook.cancel_custom_job, custom_job=resource.arn.rsplit("/", 1)[-1])
                return "cancelled custom job"
            if resource.kind == "vertex.endpoint" and action == "delete":
                return self._delete_endpoint(resource)
        except gexc.NotFound:
            raise ResourceGone(f"{resource.kind} {resource.name} no longer exists") from None
        except gexc.FailedPrecondition as e:
            if resource.kind == "vertex.custom_job":  # it ended between the re-check and the cancel
                raise ResourceGone(f"custom job {resource.name}: {e.message}") from None
            raise
        raise ValueError(f"{resource.kind} has no action {action!r}")

    def _delete_endpoint(self, resource: Resource) -> str:
        endpoint_id = resource.arn.rsplit("/", 1)[-1]
        models = list(resource.details.get("deployed_models", []))
        for i, model_id in enumerate(models):
            # A model still receiving traffic is undeployed only when its traffic moves to another one.
            rest = models[i + 1 :]
            self._call(
                self.endpoint_hook.undeploy_model,
                endpoint=endpoint_id,
                deployed_model_id=model_id,
                traffic_split={rest[0]: 100} if rest else None,
            ).result(timeout=CALL_TIMEOUT)
        self._call(self.endpoint_hook.delete_endpoint, endpoint=endpoint_id).result(timeout=CALL_TIMEOUT)
        return f"undeployed {len(models)} model(s) and deleted the endpoint"
