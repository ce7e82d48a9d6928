"""The gpu_teardown sweep over Vertex AI custom jobs and endpoints, on the fake Vertex AI (real gRPC clients
through the Google provider's hooks).

Jobs stay ``JOB_STATE_PENDING`` (the fake provisions for ten minutes), so no training process runs. Time
is an injectable clock, two hours after the resources were created, moved past the grace between sweeps.
"""

from __future__ import annotations

import json
import time

import pytest
from fakes import fake_vertex
from helpers import Clock, run_together

from airflow_retrain.cost import estimate_cost
from airflow_retrain.hooks.vertex_ai import VertexEndpointHook, VertexJobHook
from airflow_retrain.runs import to_labels
from airflow_retrain.teardown.ledger import sweep_entry
from airflow_retrain.teardown.policy import PolicyError, TeardownPolicy, load_policy
from airflow_retrain.teardown.sweep import Sweeper, build_inventories
from airflow_retrain.teardown.vertex import VertexInventory

CONN, PROJECT, REGION = "google_fake_sweep", "retrain-proj", "us-central1"
OURS = {"retrain:pipeline": "churn", "retrain:owner": "ml-team"}
T4 = {"machine_type": "n1-standard-4", "accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 1}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    server = fake_vertex.start_fake_vertex(
        gcs_root=tmp_path_factory.mktemp("gcs"), config={"pending_seconds": 600, "stop_grace_seconds": 1}
    )
    yield server
    server.stop()


@pytest.fixture
def cloud(fake, monkeypatch, tmp_path):
    fake.reset()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(fake_vertex.connection(fake, PROJECT)))
    monkeypatch.setenv("RETRAIN_STATE_DIR", str(tmp_path / "state"))  # where custom jobs' marks live
    return fake


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time() + 2 * 3600)


def policy(**overrides) -> TeardownPolicy:
    fields = {
        "gcp": [{"connection_id": CONN, "projects": [PROJECT], "regions": [REGION]}],
        "local": {"enabled": False},
        "grace_period": "30m",
        "claim_settle_seconds": 0,
        **overrides,
    }
    return TeardownPolicy.model_validate(fields)


def sweep(pol: TeardownPolicy, clock: Clock, **kwargs):
    result = Sweeper(pol, build_inventories(pol, clock), clock=clock, **kwargs).run()
    assert not result.errors, result.errors
    return result, {r.resource.split("#")[0]: r for r in result.records}


def create_job(name: str, tags: dict[str, str], timeout_seconds: int | None = None) -> str:
    pool = {
        "machine_spec": T4,
        "replica_count": 2,
        "container_spec": {"image_uri": "us-docker.pkg.dev/x/train:1", "command": ["python", "-c", "pass"]},
    }
    spec = {"worker_pool_specs": [pool], **({"scheduling": {"timeout": {"seconds": timeout_seconds}}} if timeout_seconds else {})}
    job = VertexJobHook(gcp_conn_id=CONN).create_custom_job(
        project_id=PROJECT, region=REGION, custom_job={"display_name": name, "labels": to_labels(tags), "job_spec": spec}
    )
    return job.name


def job_state(name: str) -> str:
    return VertexJobHook(gcp_conn_id=CONN).get_custom_job(project_id=PROJECT, region=REGION, custom_job=name.rsplit("/", 1)[-1]).state.name


def create_endpoint(name: str, tags: dict[str, str], models: int = 1) -> str:
    hook = VertexEndpointHook(gcp_conn_id=CONN)
    ep = hook.create_endpoint(project_id=PROJECT, region=REGION, endpoint={"display_name": name, "labels": to_labels(tags)}).result()
    for i in range(models):
        hook.deploy_model(
            project_id=PROJECT, region=REGION, endpoint=ep.name.rsplit("/", 1)[-1],
            deployed_model={"model": f"projects/{PROJECT}/locations/{REGION}/models/{i}",
                            "dedicated_resources": {"machine_spec": T4, "min_replica_count": 1, "max_replica_count": 2}},
            traffic_split={"0": 100},
        ).result()
    return ep.name


def endpoint_labels(cloud, name: str) -> dict[str, str] | None:
    hook = VertexEndpointHook(gcp_conn_id=CONN)
    return dict(hook.get_endpoint(project_id=PROJECT, region=REGION, endpoint=name.rsplit("/", 1)[-1]).labels) if name in cloud.endpoints.names() else None


def test_job_past_its_ttl_is_cancelled_after_the_grace_an_exempt_one_is_not(cloud, clock, tmp_path):
    expired = create_job("expired-job", {**OURS, "retrain:expires-at": str(int(clock() - 60))})
    live = create_job("live-job", {**OURS, "retrain:expires-at": str(int(clock() + 86400))})
    kept = create_job("kept-job", {**OURS, "retrain:expires-at": str(int(clock() - 60)), "retrain:keep": "true"})
    create_job("someone-elses", {"team": "search", "retrain:expires-at": str(int(clock() - 60))})
    pol = policy()

    first, records = sweep(pol, clock)
    assert (records["expired-job"].outcome, records["expired-job"].action) == ("marked", "cancel")
    assert records["live-job"].outcome == "busy" and records["kept-job"].outcome == "exempt"
    assert "someone-elses" not in records and first.out_of_scope == 1
    # Custom job labels cannot change: the mark is in the sweep's own store, not on the job.
    marks = list((tmp_path / "state" / "teardown" / "vertex-marks").glob("*.json"))
    assert len(marks) == 1 and "cancel@" in marks[0].read_text()
    assert "UpdateCustomJob" not in cloud.calls

    clock.advance(10 * 60)
    assert sweep(pol, clock)[1]["expired-job"].outcome == "waiting"
    assert "CancelCustomJob" not in cloud.calls

    clock.advance(21 * 60)
    result, records = sweep(pol, clock)
    acted = records["expired-job"]
    assert (acted.outcome, acted.detail) == ("acted", "cancelled custom job")
    assert cloud.calls["CancelCustomJob"] == 1
    assert job_state(expired) in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED")
    assert job_state(live) == job_state(kept) == "JOB_STATE_PENDING"

    # Its ledger row: 2 replicas x (n1-standard-4 + one T4) for the job's uptime, 2 GPUs.
    row = sweep_entry(acted, result.sweep_id)
    assert (row.backend, row.kind, row.pipeline, row.instance_count) == ("vertex", "vertex.custom_job", "churn", 2)
    assert row.instance_type == "n1-standard-4+nvidia-tesla-t4"
    assert row.gpu_hours == pytest.approx(row.seconds * 2 / 3600, abs=1e-5) and row.gpu_hours > 0
    assert row.usd == pytest.approx(estimate_cost("vertex", "n1-standard-4+nvidia-tesla-t4", row.seconds, 2, region=REGION).usd)
    assert row.saving_usd_per_hour == pytest.approx(estimate_cost("vertex", "n1-standard-4+nvidia-tesla-t4", 3600, 2, region=REGION).usd)

    # Once the job has ended, the sweep forgets its mark.
    cloud.stop_all_jobs()
    sweep(pol, clock)
    assert not list((tmp_path / "state" / "teardown" / "vertex-marks").glob("*"))


def test_job_running_past_its_max_runtime(cloud, clock):
    create_job("own-timeout", OURS, timeout_seconds=3600)  # created two hours before the clock
    create_job("long-timeout", OURS, timeout_seconds=86400)
    _, records = sweep(policy(), clock)
    assert records["own-timeout"].outcome == "marked"
    assert records["own-timeout"].reason == "running longer than its maximum runtime"
    assert records["long-timeout"].outcome == "busy"
    _, records = sweep(policy(kinds={"vertex.custom_job": {"max_runtime": "1h"}}), clock)
    assert records["long-timeout"].outcome == "marked"


def test_dry_run_changes_nothing(cloud, clock, tmp_path):
    create_job("expired-job", {**OURS, "retrain:expires-at": str(int(clock() - 60))})
    ep = create_endpoint("expired-ep", {**OURS, "retrain:expires-at": str(int(clock() - 60))})
    labels = endpoint_labels(cloud, ep)
    pol = policy(dry_run=True)
    for _ in range(2):
        _, records = sweep(pol, clock)
        assert records["expired-job"].outcome == records["expired-ep"].outcome == "would mark"
        clock.advance(31 * 60)
    assert endpoint_labels(cloud, ep) == labels
    assert not (tmp_path / "state" / "teardown" / "vertex-marks").exists()
    assert not {"UpdateEndpoint", "CancelCustomJob", "UndeployModel", "DeleteEndpoint"} & set(cloud.calls)
    assert set(cloud.calls) - {"CreateCustomJob", "CreateEndpoint", "DeployModel"} <= {
        "ListCustomJobs", "ListEndpoints", "GetEndpoint"
    }


def test_endpoint_past_its_ttl_is_undeployed_and_deleted(cloud, clock):
    expired = create_endpoint("expired-ep", {**OURS, "retrain:expires-at": str(int(clock() - 60))}, models=2)
    live = create_endpoint("live-ep", {**OURS, "retrain:expires-at": str(int(clock() + 86400))})
    kept = create_endpoint("kept-ep", {**OURS, "retrain:expires-at": "1", "retrain:keep": "true"})
    pol = policy()
    _, records = sweep(pol, clock)
    assert records["expired-ep"].outcome == "marked"
    assert records["expired-ep"].instance_count == 2 and records["expired-ep"].saving_usd_per_hour > 0
    # An endpoint's labels can change: the mark is a label, in label form.
    mark = endpoint_labels(cloud, expired)["retrain_teardown-planned"]
    assert mark == f"delete_{int(clock())}"
    assert records["live-ep"].outcome == "busy" and records["kept-ep"].outcome == "exempt"

    clock.advance(31 * 60)
    _, records = sweep(pol, clock)
    assert records["expired-ep"].outcome == "acted"
    assert records["expired-ep"].detail == "undeployed 2 model(s) and deleted the endpoint"
    assert cloud.endpoints.calls["UndeployModel"] == 2 and cloud.endpoints.calls["DeleteEndpoint"] == 1
    assert sorted(cloud.endpoints.names()) == sorted([live, kept])
    assert "retrain_teardown-planned" not in endpoint_labels(cloud, kept)


def test_exemption_added_after_marking_removes_the_endpoint_mark(cloud, clock):
    ep = create_endpoint("ep", {**OURS, "retrain:expires-at": str(int(clock() - 60))}, models=0)
    pol = policy()
    sweep(pol, clock)
    hook = VertexEndpointHook(gcp_conn_id=CONN)
    hook.update_endpoint(
        project_id=PROJECT, region=REGION, endpoint_id=ep.rsplit("/", 1)[-1],
        endpoint={"labels": {**endpoint_labels(cloud, ep), "retrain_keep": "true"}}, update_mask={"paths": ["labels"]},
    )
    clock.advance(31 * 60)
    _, records = sweep(pol, clock)
    assert records["ep"].outcome == "exempt" and records["ep"].detail == "mark removed (exempt)"
    assert "retrain_teardown-planned" not in endpoint_labels(cloud, ep)
    assert ep in cloud.endpoints.names()


def test_two_concurrent_sweeps_act_once(cloud, clock):
    create_job("expired-job", {**OURS, "retrain:expires-at": str(int(clock() - 60))})
    create_endpoint("expired-ep", {**OURS, "retrain:expires-at": str(int(clock() - 60))})
    pol = policy(claim_settle_seconds=0.5)
    sweep(pol, clock)
    clock.advance(31 * 60)
    sweepers = [Sweeper(pol, build_inventories(pol, clock), clock=clock) for _ in range(2)]
    results = run_together(sweepers)
    for name in ("expired-job", "expired-ep"):
        outcomes = [r.outcome for result in results for r in result.records if r.resource.startswith(name + "#")]
        assert outcomes.count("acted") == 1 and outcomes.count("skipped") == 1, (name, outcomes)
    assert cloud.calls["CancelCustomJob"] == 1
    assert cloud.endpoints.calls["DeleteEndpoint"] == 1


def test_an_api_error_on_one_resource_is_recorded_and_the_sweep_goes_on(cloud, clock, monkeypatch):
    from google.api_core import exceptions as gexc

    create_job("denied-job", {**OURS, "retrain:expires-at": str(int(clock() - 60))})
    create_endpoint("expired-ep", {**OURS, "retrain:expires-at": str(int(clock() - 60))})
    pol = policy()
    sweep(pol, clock)
    clock.advance(31 * 60)

    def denied(self, **_):
        raise gexc.PermissionDenied("Permission 'aiplatform.customJobs.cancel' denied")

    monkeypatch.setattr(VertexJobHook, "cancel_custom_job", denied)
    result = Sweeper(pol, build_inventories(pol, clock), clock=clock).run()
    records = {r.resource.split("#")[0]: r for r in result.records}
    assert records["denied-job"].outcome == "error" and "aiplatform.customJobs.cancel" in records["denied-job"].reason
    assert records["expired-ep"].outcome == "acted"
    assert len(result.errors) == 1 and "denied-job" in result.errors[0]


def test_gcp_policy_section_is_validated_naming_file_and_field(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("gcp:\n  - connection_id: gcp_a\n    regions: [us-central1, europe-west4]\n  - connection_id: gcp_b\n"
                    "    projects: [proj-one, proj-two]\n    regions: [us-east1]\n")
    pol = load_policy(good)
    inventories = VertexInventory.from_policy(pol)
    assert [i.location for i in inventories] == [
        "gcp_a/(connection project)/us-central1", "gcp_a/(connection project)/europe-west4",
        "gcp_b/proj-one/us-east1", "gcp_b/proj-two/us-east1",
    ]
    cases = {
        "gcp: [{connection_id: '', regions: [us-central1]}]": "gcp.0.connection_id",
        "gcp: [{connection_id: a, regions: []}]": "gcp.0.regions",
        "gcp: [{connection_id: a, regions: [US Central]}]": "gcp.0.regions.0",
        "gcp: [{connection_id: a, regions: [us-central1, us-central1]}]": "gcp.0.regions",
        "gcp: [{connection_id: a, projects: [], regions: [us-central1]}]": "gcp.0.projects",
        "gcp: [{connection_id: a, projects: [My_Project], regions: [us-central1]}]": "gcp.0.projects.0",
        "gcp: [{connection_id: a, region: us-central1}]": "gcp.0.region",
        "kinds: {vertex.custom_job: {action: delete}}": "kinds.vertex.custom_job.action",
        "kinds: {vertex.custom_job: {max_runtime: .inf}}": "kinds.'vertex.custom_job'.max_runtime",
    }
    for text, field in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(text + "\n")
        with pytest.raises(PolicyError) as caught:
            load_policy(bad)
        assert str(bad) in str(caught.value) and field in str(caught.value), (text, str(caught.value))
