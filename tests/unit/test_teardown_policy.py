"""The teardown policy: shipped defaults, durations, and errors that name the file and the field."""

from __future__ import annotations

import pytest
import yaml

from airflow_retrain.teardown import KIND_ACTIONS
from airflow_retrain.teardown.policy import PolicyError, TeardownPolicy, load_policy, parse_duration


def write(tmp_path, data) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def test_shipped_policy_is_the_documented_defaults(root):
    policy = load_policy(root / "include" / "teardown" / "policy.yaml")
    assert policy.schedule == "*/15 * * * *"
    assert (policy.scope, policy.dry_run, policy.idle_window, policy.grace_period) == ("tagged", False, 3600, 1800)
    assert policy.aws == [] and policy.local.enabled
    assert policy.action_for("sagemaker.endpoint") == "delete"
    assert policy.action_for("local.gpu_process") == "report"
    assert policy.idle_window_for("sagemaker.notebook_instance") == 8 * 3600
    assert policy.idle_window_for("sagemaker.endpoint") == 3600
    assert policy.tags.ttl == "retrain:expires-at" and policy.tags.planned == "retrain:teardown-planned"
    # Every kind has a default action, and the shipped file only names known kinds.
    assert set(policy.kinds) == set(KIND_ACTIONS)


def test_empty_policy_file_means_defaults(tmp_path):
    assert load_policy(write(tmp_path, "")) == TeardownPolicy(source_path=str((tmp_path / "policy.yaml").resolve()))


@pytest.mark.parametrize(
    ("value", "seconds"), [(900, 900), ("900", 900), ("15m", 900), ("1.5h", 5400), ("2d", 172800), ("30s", 30)]
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


def test_scope_exemption_and_actions():
    policy = TeardownPolicy.model_validate({"kinds": {"sagemaker.endpoint": {"action": "report"}}})
    assert policy.in_scope({"retrain:pipeline": "churn"}) and not policy.in_scope({"team": "x"})
    assert TeardownPolicy(scope="all").in_scope({})
    assert policy.is_exempt({"retrain:keep": "True"}) and not policy.is_exempt({"retrain:keep": "false"})
    assert policy.action_for("sagemaker.endpoint") == "report"
    assert policy.action_for("sagemaker.training_job") == "stop"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kinds": {"sagemaker.endpoint": {"action": "stop"}}},
         "kinds.sagemaker.endpoint.action: 'stop' is not an action for sagemaker.endpoint; choose one of delete, report"),
        ({"kinds": {"sagemaker.endpionts": {"action": "delete"}}}, "kinds.sagemaker.endpionts: unknown resource kind"),
        ({"grace_period": "soon"}, "grace_period: 'soon' is not a duration"),
        ({"idle_window": 0}, "idle_window: Input should be greater than 0"),
        ({"scope": "everything"}, "scope: Input should be 'tagged' or 'all'"),
        ({"dry_rn": True}, "dry_rn: unknown field"),
        ({"aws": [{"connection_id": "aws_default"}]}, "aws.0.regions: required field is missing"),
        ({"aws": [{"connection_id": "aws_default", "regions": []}]}, "aws.0.regions: List should have at least 1 item"),
        ({"tags": {"ttl": 3}}, "tags.ttl: Input should be a valid string"),
        ("schedule: [unclosed", "not valid YAML at line 1"),
        ("- a list", "<top level>: expected a mapping of fields"),
    ],
)
def test_malformed_policy_names_file_and_field(tmp_path, data, expected):
    path = write(tmp_path, data)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert path in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Durations are finite and bounded (``.inf`` used to load, then crash the DAG with an OverflowError).
        ("grace_period: .inf", "grace_period: Input should be a finite number"),
        ("idle_window: .nan", "idle_window: Input should be a finite number"),
        ("claim_settle_seconds: .inf", "claim_settle_seconds: Input should be a finite number"),
        ("claim_settle_seconds: 10m", "claim_settle_seconds: 600 s is longer than the limit of 60s"),
        ("idle_window: 400d", "idle_window: 34560000 s is longer than the limit of 365d"),
        ("grace_period: " + "9" * 400, "grace_period: 99999999999999999999... seconds is not a finite duration"),
        ("kinds: {sagemaker.endpoint: {idle_window: .inf}}", "idle_window: Input should be a finite number"),
        ("kinds: {sagemaker.training_job: {max_runtime: 0}}", "max_runtime: Input should be greater than 0"),
        # The schedule is checked as the DAG will use it (it used to be a raw timetable error, or accepted).
        ("schedule: '0 0 31 2 *'", "schedule: cron expression '0 0 31 2 *' never fires"),
        ("schedule: '61 * * * *'", "schedule: invalid cron expression '61 * * * *'"),
        ("schedule: 'every 5 minutes'", "schedule: 'every 5 minutes' is not a cron expression of 5 fields"),
        ("schedule: '@sometimes'", "schedule: unknown preset '@sometimes'"),
        # Exemptions: an empty list would silently exempt nothing (tags.exempt: null says so explicitly).
        ("tags: {exempt_values: []}", "tags.exempt_values: List should have at least 1 item"),
        ("tags: {exempt_values: ['  ']}", "tags.exempt_values: an exemption value cannot be empty"),
        ("tags: {ttl: ''}", "tags.ttl: String should have at least 1 character"),
        # Strict numbers and booleans: true is not a duration, 1 and 'yes' are not booleans.
        ("grace_period: true", "grace_period: expected a duration"),
        ("dry_run: 1", "dry_run: Input should be a valid boolean"),
        ("fail_on_errors: 'yes'", "fail_on_errors: Input should be a valid boolean"),
        ("kinds: {sagemaker.endpoint: {enabled: 'no'}}", "enabled: Input should be a valid boolean"),
        # The spec's reader: a key given twice is an error, not "last one wins".
        ("dry_run: true\ndry_run: false", "duplicate key 'dry_run' (first at line 1)"),
    ],
)
def test_policy_held_to_the_spec_rules(tmp_path, text, expected):
    path = write(tmp_path, text + "\n")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(err.value).startswith(f"invalid teardown policy {path}: ")
    assert expected in str(err.value)


def test_exemption_can_be_switched_off_explicitly_and_values_match_case_insensitively(tmp_path):
    none_exempt = load_policy(write(tmp_path, "tags: {exempt: null}\n"))
    assert not none_exempt.is_exempt({"retrain:keep": "true"})
    custom = load_policy(write(tmp_path, "tags: {exempt_values: ['Forever ']}\n"))
    assert custom.tags.exempt_values == ["forever"]
    assert custom.is_exempt({"retrain:keep": " FOREVER"}) and not custom.is_exempt({"retrain:keep": "true"})


def test_no_schedule_is_allowed_for_a_triggered_only_sweep(tmp_path):
    assert load_policy(write(tmp_path, "schedule: null\n")).schedule is None


def test_missing_policy_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nope.yaml")
