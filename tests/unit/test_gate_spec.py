"""The spec's ``gates:`` block: bad gate input is rejected at load time, naming the file and the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from airflow_retrain.dag_factory import _data_gate_config, build_dag
from airflow_retrain.gates.data import DataGateConfig
from airflow_retrain.spec import SpecError, declared_metrics, load_spec

ROOT = Path(__file__).resolve().parents[2]
CHURN = yaml.safe_load((ROOT / "include/pipelines/churn.yaml").read_text())


def load(tmp_path, mutate) -> object:
    data = copy.deepcopy(CHURN)
    mutate(data)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_churn_gates_resolve_with_defaults_from_registry(tmp_path, dbt_manifest):
    from airflow_retrain.operators.gates import _with_contract

    spec = load(tmp_path, lambda d: None)
    assert spec.model_gate_names == ["data", "metrics", "champion", "slices", "efficiency"]
    assert spec.champion_metric == "roc_auc" and spec.champion_min_improvement == 0.002
    config = _data_gate_config(spec)
    assert config.contract is None and config.feature_model == "churn_features"  # read by gate_data at run time
    assert _with_contract(config).contract["monthly_charges"] == "double precision"  # contract.enforced: true
    assert config.on_missing_snapshot == "pass" and config.ks_max == 0.1
    dag = build_dag(spec)
    assert dag.get_task("gate_data").downstream_task_ids == {"train", "gate_model"}  # its verdict feeds gate_model
    assert dag.get_task("gate_data").upstream_task_ids == {"export_dataset"}
    assert dag.get_task("gate_model").upstream_task_ids >= {"register", "gate_data"}
    assert dag.get_task("gate_model").downstream_task_ids == {"promote"}
    assert dag.get_task("register").gates == spec.model_gate_names


def test_data_gate_settings_have_one_shape_from_spec_to_gate(tmp_path):
    """gates.data -> DataGateConfig (built once, from the spec) -> the task's dict -> the same DataGateConfig."""
    spec = load(tmp_path, lambda d: d["gates"]["data"].update(min_rows=None, label_rate={"min": 0.1}))
    config = _data_gate_config(spec)
    assert isinstance(config, DataGateConfig)
    assert config.min_rows == spec.dataset.min_rows  # gates.data.min_rows unset: dataset.min_rows
    assert (config.label_rate_min, config.label_rate_max) == (0.1, None)
    assert config.null_rate_columns == dict(spec.gates.data.max_null_rate.columns)
    task_config = build_dag(spec).get_task("gate_data").config
    assert task_config == config.to_dict()
    assert DataGateConfig.from_dict(task_config) == config


def test_data_gate_config_without_contract_matching_carries_no_contract(tmp_path):
    spec = load(tmp_path, lambda d: d["gates"]["data"].update(schema={"match_contract": False}))
    config = DataGateConfig.from_spec(spec.gates.data, min_rows=7, dbt_project_dir="dbt", feature_model="m")
    assert config.match_contract is False and config.match_previous is True


def test_data_gate_config_refuses_a_field_it_does_not_have():
    """A misspelt threshold would silently switch a check off; it is an error naming the field."""
    with pytest.raises(ValueError, match="unknown field\\(s\\) psi_maximum"):
        DataGateConfig.from_dict({"psi_maximum": 0.1})


def test_training_script_declares_its_metrics():
    assert declared_metrics(ROOT / "include/training/churn/train.py") == [
        "roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier",
    ]
    assert declared_metrics(ROOT / "tests/fixtures/failing_train.py") is None


def test_gate_on_an_undeclared_metric_is_rejected_before_training(tmp_path):
    with pytest.raises(SpecError, match=r"gates\.metrics\.auc_roc: metric 'auc_roc' is never produced by "
                                        r"include/training/churn/train\.py"):
        load(tmp_path, lambda d: d["gates"]["metrics"].update(auc_roc={"min": 0.8}))


def test_champion_and_slice_metrics_must_be_declared_and_scorable(tmp_path):
    with pytest.raises(SpecError, match=r"gates\.champion\.metric: metric 'lift' is never produced"):
        load(tmp_path, lambda d: d["gates"].update(champion={"metric": "lift"}))
    with pytest.raises(SpecError, match=r"gates\.slices\.metric: metric 'lift' is never produced"):
        load(tmp_path, lambda d: d["gates"]["slices"].update(metric="lift"))


def test_unknown_slice_column(tmp_path, dbt_manifest):
    with pytest.raises(SpecError, match=r"gates\.slices\.columns\[1\]: unknown column 'contract' \(not among the \d+ "
                                        r"columns of the enforced dbt contract of churn_features"):
        load(tmp_path, lambda d: d["gates"]["slices"].update(columns=["is_female", "contract"]))
    with pytest.raises(SpecError, match=r"gates\.slices\.columns\[0\]: 'churned' is the label or id column"):
        load(tmp_path, lambda d: d["gates"]["slices"].update(columns=["churned"]))


def test_unknown_null_rate_and_drift_columns(tmp_path, dbt_manifest):
    def mutate(d):
        d["gates"]["data"]["max_null_rate"]["columns"] = {"total_charge": 0.01}
        d["gates"]["data"]["drift"]["columns"] = ["tenure"]

    with pytest.raises(SpecError) as e:
        load(tmp_path, mutate)
    assert "gates.data.max_null_rate.columns.total_charge: unknown column 'total_charge'" in str(e.value)
    assert "gates.data.drift.columns[0]: unknown column 'tenure'" in str(e.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["gates"]["data"].update(label_rate={"min": 0.6, "max": 0.2}),
         r"gates\.data\.label_rate: min 0\.6 is above max 0\.2"),
        (lambda d: d["gates"]["metrics"].update(roc_auc={"min": 0.9, "max": 0.8}),
         r"gates\.metrics\.roc_auc: min 0\.9 is above max 0\.8"),
        (lambda d: d["gates"]["data"].update(max_row_change=-0.1), r"gates\.data\.max_row_change: .*greater than 0"),
        (lambda d: d["gates"]["data"]["max_null_rate"].update(default=1.5), r"gates\.data\.max_null_rate\.default"),
        (lambda d: d["gates"]["data"]["drift"].update(ks_max=2), r"gates\.data\.drift\.ks_max: .*less than or equal"),
        (lambda d: d["gates"]["data"]["drift"].update(psi_max=None, ks_max=None),
         r"gates\.data\.drift: a drift gate needs psi_max and/or ks_max"),
        (lambda d: d["gates"].update(efficiency={"rows": 10}),
         r"gates\.efficiency: an efficiency gate needs max_model_mb and/or max_latency_ms"),
        (lambda d: d["gates"].update(champion={"greater_is_better": False}),
         r"gates\.champion\.greater_is_better contradicts registry\.greater_is_better"),
        (lambda d: d["gates"]["champion"].update(min_improvement=-0.1), r"gates\.champion\.min_improvement"),
        (lambda d: d["gates"]["slices"].update(max_regression=-1), r"gates\.slices\.max_regression"),
    ],
)
def test_contradictory_or_impossible_thresholds(tmp_path, mutate, expected):
    with pytest.raises(SpecError, match=expected):
        load(tmp_path, mutate)


def test_first_run_policy_must_be_explicit(tmp_path):
    with pytest.raises(SpecError, match=r"gates\.data\.drift\.on_missing_snapshot: required field is missing"):
        load(tmp_path, lambda d: d["gates"]["data"]["drift"].pop("on_missing_snapshot"))


def test_drift_triggered_policy_defaults_to_warn_and_names_a_bad_value(tmp_path, dbt_manifest):
    assert _data_gate_config(load(tmp_path, lambda d: None)).on_drift_trigger == "warn"
    strict = load(tmp_path, lambda d: d["gates"]["data"]["drift"].update(on_drift_trigger="fail"))
    assert _data_gate_config(strict).on_drift_trigger == "fail"
    with pytest.raises(SpecError, match=r"gates\.data\.drift\.on_drift_trigger"):
        load(tmp_path, lambda d: d["gates"]["data"]["drift"].update(on_drift_trigger="ignore"))


def test_documented_columns_are_not_a_contract(tmp_path, dbt_manifest, monkeypatch):
    """A model whose YAML documents two columns (no contract.enforced) is not a contract: the spec may name
    its other, real columns, and the gate's contract check is skipped, saying why."""
    import airflow_retrain.spec.checks as checks
    from airflow_retrain.dbt.contracts import model_contract
    from airflow_retrain.dbt.manifest import load_index

    index = load_index(ROOT / "dbt")
    node = index.nodes["model.retrain.churn_features"]
    node.update(contract_enforced=False, columns={"customer_id": "varchar", "churned": "integer"})
    monkeypatch.setattr(checks, "load_index", lambda *a, **k: index)
    spec = load(tmp_path, lambda d: d["gates"]["data"]["max_null_rate"].update(columns={"total_charges": 0.2}))
    assert spec.gates.data.max_null_rate.columns == {"total_charges": 0.2}
    contract = model_contract(index, "churn_features")
    assert contract.columns is None
    assert "has no enforced contract (config contract.enforced is not true; its YAML documents 2 column(s)" in contract.note
