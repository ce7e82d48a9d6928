"""The gpu_teardown sweep on the fake cloud (``scripts/fake_cloud``: moto's server with training jobs that
run, real boto3 through the Amazon provider's hooks).

Time is an injectable clock: the sweep's "now" starts two hours after the resources were created (so they
are older than the one-hour idle window) and is moved past the grace period between sweeps.
"""

from __future__ import annotations

import json
import time

import pytest
from helpers import (
    Clock,
    create_endpoint,
    create_notebook,
    create_training_job,
    invoke,
    run_together,
    sagemaker_estate_cloud,
    tags_of,
    wait_for,
)

from airflow_retrain.cost import estimate_cost
from airflow_retrain.teardown.policy import TeardownPolicy
from airflow_retrain.teardown.sagemaker import SageMakerInventory
from airflow_retrain.teardown.sweep import Sweeper

PLANNED, CLAIM = "retrain:teardown-planned", "retrain:teardown-claim"
CONN_ID, REGION = "aws_fake", "us-east-1"
OURS = {"retrain:pipeline": "churn", "retrain:owner": "ml-team", "retrain:dag-id": "churn_retrain"}


@pytest.fixture
def cloud(fake_cloud, monkeypatch):
    """The session's fake cloud (reset), the sweep's connection pointing at it; ``(sagemaker, cloudwatch)``."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(fake_cloud.connection()))
    return sagemaker_estate_cloud(fake_cloud)


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time() + 2 * 3600)


def policy(**overrides) -> TeardownPolicy:
    fields = {
        "aws": [{"connection_id": CONN_ID, "regions": [REGION]}],
        "local": {"enabled": False},
        "idle_window": "1h",
        "grace_period": "30m",
        "claim_settle_seconds": 0,
        "kinds": {"sagemaker.notebook_instance": {"idle_window": "1h"}},
        **overrides,
    }
    return TeardownPolicy.model_validate(fields)


def sweep(pol: TeardownPolicy, clock: Clock, **kwargs) -> tuple:
    inventories = SageMakerInventory.from_policy(pol, clock)
    result = Sweeper(pol, inventories, clock=clock, **kwargs).run()
    return result, {r.resource: r for r in result.records}


def endpoint_arn(sm, name: str) -> str:
    return sm.describe_endpoint(EndpointName=name)["EndpointArn"]


def endpoint_names(sm) -> set[str]:
    return {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]}


@pytest.fixture
def estate(cloud, clock):
    """Idle, busy, exempt and untagged endpoints; an idle notebook; a training job past its TTL."""
    sm, cw = cloud
    create_endpoint(sm, "idle-ep", OURS)
    create_endpoint(sm, "busy-ep", OURS)
    create_endpoint(sm, "exempt-ep", {**OURS, "retrain:keep": "true"})
    create_endpoint(sm, "someone-elses-ep", {"team": "search"})
    create_notebook(sm, "idle-nb", OURS)
    create_training_job(sm, "expired-job", {**OURS, "retrain:expires-at": str(int(clock() - 60))})
    create_training_job(sm, "live-job", {**OURS, "retrain:expires-at": str(int(clock() + 86400))})
    invoke(cw, "busy-ep", clock() - 600)
    return sm, cw


def test_idle_resources_are_marked_then_acted_on_after_the_grace(estate, clock):
    sm, cw = estate
    pol = policy()
    untouched = {name: tags_of(sm, endpoint_arn(sm, name)) for name in ("exempt-ep", "someone-elses-ep")}

    result, by_name = sweep(pol, clock)
    assert result.errors == []
    assert {n for n, r in by_name.items() if r.outcome == "marked"} == {"idle-ep", "idle-nb", "expired-job"}
    assert by_name["busy-ep"].outcome == "busy" and "5 Invocations" in by_name["busy-ep"].reason
    assert by_name["live-job"].outcome == "busy"
    assert by_name["exempt-ep"].outcome == "exempt"
    assert "someone-elses-ep" not in by_name and result.out_of_scope == 1
    assert by_name["idle-ep"].evidence["invocations"] == 0
    assert by_name["expired-job"].reason == "past its TTL"
    mark = tags_of(sm, endpoint_arn(sm, "idle-ep"))[PLANNED]
    assert mark == f"delete@{int(clock())}"
    assert PLANNED not in tags_of(sm, endpoint_arn(sm, "busy-ep"))

    clock.advance(10 * 60)  # inside the grace: nothing happens
    result, by_name = sweep(pol, clock)
    assert {n for n, r in by_name.items() if r.outcome == "waiting"} == {"idle-ep", "idle-nb", "expired-job"}
    assert "idle-ep" in endpoint_names(sm)

    clock.advance(21 * 60)  # past the grace, still idle: acted on
    result, by_name = sweep(pol, clock)
    assert result.errors == []
    print("API calls of the acting sweep:", result.api_calls, "in", result.seconds, "s")
    assert {n for n, r in by_name.items() if r.outcome == "acted"} == {"idle-ep", "idle-nb", "expired-job"}
    assert endpoint_names(sm) == {"busy-ep", "exempt-ep", "someone-elses-ep"}
    assert "idle-ep-config" not in {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]}
    assert by_name["idle-ep"].detail == "deleted endpoint and endpoint config idle-ep-config"
    assert sm.describe_notebook_instance(NotebookInstanceName="idle-nb")["NotebookInstanceStatus"] == "Stopped"
    assert PLANNED not in tags_of(sm, sm.describe_notebook_instance(NotebookInstanceName="idle-nb")["NotebookInstanceArn"])
    # StopTrainingJob answers at once; the job passes through Stopping to Stopped, as on SageMaker.
    assert sm.describe_training_job(TrainingJobName="expired-job")["TrainingJobStatus"] in ("Stopping", "Stopped")
    wait_for(lambda: sm.describe_training_job(TrainingJobName="expired-job")["TrainingJobStatus"] == "Stopped", 30)
    assert sm.describe_training_job(TrainingJobName="live-job")["TrainingJobStatus"] == "InProgress"
    # Exempt and out-of-scope resources were never written to.
    assert {name: tags_of(sm, endpoint_arn(sm, name)) for name in untouched} == untouched

    # Every action carries its saving, from the package's one cost model.
    g4dn, g5, p3 = (estimate_cost("sagemaker", t, 3600).usd for t in ("ml.g4dn.xlarge", "ml.g5.xlarge", "ml.p3.2xlarge"))
    assert by_name["idle-ep"].saving_usd_per_hour == g4dn
    assert by_name["idle-nb"].saving_usd_per_hour == p3
    assert by_name["expired-job"].saving_usd_per_hour == g5
    assert by_name["idle-ep"].gpu_hours == pytest.approx(by_name["idle-ep"].uptime_seconds / 3600, abs=1e-4)
    assert result.summary()["saving_usd_per_hour"] == pytest.approx(g4dn + g5 + p3)
    assert result.api_calls > 0


def test_dry_run_changes_nothing(estate, clock):
    sm, _ = estate
    # A mark from an earlier (real) sweep, long past its grace.
    sm.add_tags(ResourceArn=endpoint_arn(sm, "busy-ep"), Tags=[{"Key": PLANNED, "Value": f"delete@{int(clock() - 7200)}"}])
    sm.add_tags(ResourceArn=endpoint_arn(sm, "idle-ep"), Tags=[{"Key": PLANNED, "Value": f"delete@{int(clock() - 7200)}"}])
    names = ("idle-ep", "busy-ep", "exempt-ep", "someone-elses-ep")
    before = {n: tags_of(sm, endpoint_arn(sm, n)) for n in names}

    result, by_name = sweep(policy(dry_run=True), clock)
    assert result.dry_run and result.errors == []
    assert by_name["idle-ep"].outcome == "would act"
    assert by_name["busy-ep"].outcome == "would unmark"
    assert by_name["idle-nb"].outcome == "would mark"
    assert by_name["expired-job"].outcome == "would mark"
    assert {n: tags_of(sm, endpoint_arn(sm, n)) for n in names} == before
    assert endpoint_names(sm) == set(names)
    assert sm.describe_notebook_instance(NotebookInstanceName="idle-nb")["NotebookInstanceStatus"] == "InService"
    assert sm.describe_training_job(TrainingJobName="expired-job")["TrainingJobStatus"] == "InProgress"


def test_busy_again_after_marking_is_unmarked(estate, clock):
    sm, cw = estate
    pol = policy()
    _, by_name = sweep(pol, clock)
    assert by_name["idle-ep"].outcome == "marked"
    clock.advance(31 * 60)
    invoke(cw, "idle-ep", clock() - 60, count=1)  # someone calls it during the grace
    _, by_name = sweep(pol, clock)
    assert by_name["idle-ep"].outcome == "unmarked"
    assert by_name["idle-ep"].detail == "mark removed (busy again)"
    assert PLANNED not in tags_of(sm, endpoint_arn(sm, "idle-ep"))
    assert "idle-ep" in endpoint_names(sm)


@pytest.mark.slow
def test_exempted_after_marking_loses_the_mark_and_stays(estate, clock):
    sm, _ = estate
    pol = policy()
    sweep(pol, clock)
    arn = endpoint_arn(sm, "idle-ep")
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "retrain:keep", "Value": "true"}])
    clock.advance(31 * 60)
    _, by_name = sweep(pol, clock)
    assert by_name["idle-ep"].outcome == "exempt"
    assert PLANNED not in tags_of(sm, arn)
    assert "idle-ep" in endpoint_names(sm)


def test_scope_all_includes_untagged_resources(estate, clock):
    result, by_name = sweep(policy(scope="all"), clock)
    assert by_name["someone-elses-ep"].outcome == "marked"
    assert result.out_of_scope == 0


def test_report_action_and_disabled_kinds(estate, clock):
    pol = policy(kinds={"sagemaker.endpoint": {"action": "report"}, "sagemaker.notebook_instance": {"enabled": False}})
    sm, _ = estate
    result, by_name = sweep(pol, clock)
    assert by_name["idle-ep"].outcome == "reported"
    assert "idle-nb" not in by_name
    assert PLANNED not in tags_of(sm, endpoint_arn(sm, "idle-ep"))


def test_max_runtime_finding(cloud, clock):
    sm, _ = cloud
    create_training_job(sm, "long-job", {**OURS, "retrain:expires-at": str(int(clock() + 86400))}, max_runtime=3600)
    _, by_name = sweep(policy(), clock)  # created two hours before the sweep's "now"
    assert by_name["long-job"].outcome == "marked"
    assert by_name["long-job"].reason == "running longer than its maximum runtime"


def api_params(request: dict) -> dict:
    """The API parameters of a ``before-call`` event's request (SageMaker speaks JSON)."""
    return json.loads(request["body"] or b"{}")


def _fail(operation: str, code: str, message: str, when):
    def handler(params, **_):
        if when(api_params(params)):
            return (
                type("Http", (), {"status_code": 400, "headers": {}})(),
                {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}},
            )
        return None

    return f"before-call.sagemaker.{operation}", handler


@pytest.mark.slow
def test_permission_error_and_vanished_resource_do_not_stop_the_sweep(cloud, clock):
    sm, _ = cloud
    for name in ("denied-ep", "vanishing-ep", "fine-ep"):
        create_endpoint(sm, name, OURS)
    pol = policy()
    sweep(pol, clock)
    clock.advance(31 * 60)

    inventory = SageMakerInventory.from_policy(pol, clock)[0]
    event, handler = _fail(
        "DeleteEndpoint", "AccessDeniedException", "not authorized to perform: sagemaker:DeleteEndpoint",
        lambda p: p.get("EndpointName") == "denied-ep",
    )
    inventory.sagemaker.meta.events.register(event, handler)

    def vanish(params, **_):  # someone deletes it between the listing and the describe
        if api_params(params).get("EndpointName") == "vanishing-ep" and "vanishing-ep" in endpoint_names(sm):
            sm.delete_endpoint(EndpointName="vanishing-ep")

    inventory.sagemaker.meta.events.register("before-call.sagemaker.DescribeEndpoint", vanish)
    result = Sweeper(pol, [inventory], clock=clock).run()
    by_name = {r.resource: r for r in result.records}
    assert by_name["denied-ep"].outcome == "error"
    assert "AccessDeniedException" in by_name["denied-ep"].reason
    assert by_name["vanishing-ep"].outcome == "gone"
    assert by_name["fine-ep"].outcome == "acted"
    assert len(result.errors) == 1 and "denied-ep" in result.errors[0]
    assert endpoint_names(sm) == {"denied-ep"}


@pytest.mark.slow
def test_an_unreachable_account_is_reported_and_the_others_swept(cloud, clock, monkeypatch):
    sm, _ = cloud
    create_endpoint(sm, "idle-ep", OURS)
    # Fail fast the supported way: the connection's botocore config_kwargs override the sweep's bounds.
    monkeypatch.setenv("AIRFLOW_CONN_AWS_BROKEN", '{"conn_type": "aws", "login": "x", "password": "y", '
                       '"extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1", '
                       '"config_kwargs": {"connect_timeout": 1, "retries": {"mode": "standard", '
                       '"total_max_attempts": 1}}}}')
    pol = policy(aws=[{"connection_id": "aws_broken", "regions": [REGION]}, {"connection_id": CONN_ID, "regions": [REGION]}])
    inventories = SageMakerInventory.from_policy(pol, clock)
    result = Sweeper(pol, inventories, clock=clock).run()
    assert len(result.errors) == 1 and result.errors[0].startswith("aws_broken/us-east-1: could not sweep")
    assert [r.resource for r in result.records if r.outcome == "marked"] == ["idle-ep"]


def test_clients_retry_with_backoff_within_bounds(cloud, clock):
    from airflow_retrain.teardown.sagemaker import SWEEP_MAX_ATTEMPTS

    inventory = SageMakerInventory.from_policy(policy(), clock)[0]
    for client in (inventory.sagemaker, inventory.cloudwatch):
        assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": SWEEP_MAX_ATTEMPTS}
        assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (5, 20)


@pytest.mark.slow
def test_two_concurrent_sweeps_act_once(cloud, fake_cloud, clock):
    sm, _ = cloud
    create_endpoint(sm, "idle-ep", OURS)
    create_training_job(sm, "expired-job", {**OURS, "retrain:expires-at": str(int(clock() - 60))})
    pol = policy(claim_settle_seconds=0.5)
    sweep(pol, clock)
    clock.advance(31 * 60)
    fake_cloud.reset_calls()

    deletes: list[str] = []
    sweepers = []
    for _ in range(2):
        inventories = SageMakerInventory.from_policy(pol, clock)
        inventories[0].sagemaker.meta.events.register(
            "before-call.sagemaker.DeleteEndpoint", lambda params, **_: deletes.append(api_params(params)["EndpointName"])
        )
        sweepers.append(Sweeper(pol, inventories, clock=clock))
    results = run_together(sweepers)
    outcomes = sorted(r.outcome for result in results for r in result.records if r.resource == "idle-ep")
    assert outcomes.count("acted") == 1, outcomes
    assert deletes == ["idle-ep"]
    assert fake_cloud.calls().get("sagemaker:StopTrainingJob") == 1
    assert sm.describe_training_job(TrainingJobName="expired-job")["TrainingJobStatus"] in ("Stopping", "Stopped")
    assert sorted(r.outcome for result in results for r in result.records if r.resource == "expired-job").count("acted") == 1


@pytest.mark.slow
def test_sweep_operator_logs_a_table_records_actions_in_the_ledger_and_fails_after_errors(cloud, tmp_path, monkeypatch, capsys):
    from airflow_retrain.operators.sweep import GpuTeardownSweepOperator
    from airflow_retrain.teardown.ledger import CostLedger

    sm, _ = cloud
    create_endpoint(sm, "idle-ep", OURS)
    create_endpoint(sm, "kept-ep", {**OURS, "retrain:keep": "true"})
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        f"aws: [{{connection_id: {CONN_ID}, regions: [{REGION}]}}]\nlocal: {{enabled: false}}\n"
        "idle_window: 1s\ngrace_period: 0s\nclaim_settle_seconds: 0\nwarehouse_connection_id: sweep_ledger\n"
    )
    monkeypatch.setenv("AIRFLOW_CONN_SWEEP_LEDGER", json.dumps({"conn_type": "duckdb", "host": str(tmp_path / "w.duckdb")}))
    time.sleep(1.1)  # older than the idle window, by the real clock the operator uses
    op = GpuTeardownSweepOperator(task_id="sweep", policy_path=str(policy_file))

    dry = GpuTeardownSweepOperator(task_id="sweep", policy_path=str(policy_file), dry_run=True).execute({})
    assert dry["outcomes"] == {"would mark": 1, "exempt": 1}
    first = op.execute({})
    assert first["outcomes"] == {"marked": 1, "exempt": 1}
    second = op.execute({})
    assert second["outcomes"] == {"acted": 1, "exempt": 1}
    assert second["saving_usd_per_hour"] == estimate_cost("sagemaker", "ml.g4dn.xlarge", 3600).usd
    out = capsys.readouterr().out
    assert "outcome  kind" in out and "acted    sagemaker.endpoint  idle-ep" in out
    (row,) = CostLedger.from_connection("sweep_ledger").rows()
    assert (row["resource"], row["source"], row["kind"], row["pipeline"]) == ("idle-ep", "sweep", "sagemaker.endpoint", "churn")
    assert row["saving_usd_per_hour"] == second["saving_usd_per_hour"]
    assert row["usd"] == pytest.approx(row["saving_usd_per_hour"] * row["seconds"] / 3600, abs=1e-6)
    assert row["details"]["evidence"]["invocations"] == 0

    # An error on one resource: the sweep completes, then the task fails naming it.
    create_endpoint(sm, "denied-ep", OURS)
    time.sleep(1.1)
    op.execute({})  # marks it
    event, handler = _fail("DeleteEndpoint", "AccessDeniedException", "no", lambda p: True)
    real_client = SageMakerInventory._client

    def client_with_denial(self, client_type):
        client = real_client(self, client_type)
        if client_type == "sagemaker":
            client.meta.events.register(event, handler)
        return client

    monkeypatch.setattr(SageMakerInventory, "_client", client_with_denial)
    with pytest.raises(RuntimeError, match="denied-ep.*AccessDeniedException"):
        op.execute({})
