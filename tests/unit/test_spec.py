"""Pipeline spec validation: every error names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import write_spec

from airflow_retrain.spec import PipelineSpec, SpecError, load_spec, load_specs

ROOT = Path(__file__).resolve().parents[2]
CHURN = ROOT / "include" / "pipelines" / "churn.yaml"


def churn_dict() -> dict:
    return yaml.safe_load(CHURN.read_text())


def test_churn_spec_loads():
    spec = load_spec(CHURN)
    assert isinstance(spec, PipelineSpec)
    assert spec.dag_id == "churn_retrain"
    assert spec.training.backend == "local"
    assert spec.dataset.feature_table == "churn_features"
    assert spec.gates.metrics["roc_auc"].min == 0.80
    assert spec.registry.primary_metric == "roc_auc"
    assert Path(spec.root) == ROOT
    assert spec.path(spec.training.entry_point) == ROOT / "include/training/churn/train.py"


def test_missing_field_names_file_and_field(tmp_path):
    data = churn_dict()
    del data["dataset"]["target_column"]
    path = write_spec(tmp_path, data)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(path) in str(e.value)
    assert "dataset.target_column: required field is missing" in str(e.value)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        pytest.param(("training", "resources", "instance_count"), "many",
                     r"training\.resources\.instance_count: .*integer", id="wrong_type_names_field"),
        pytest.param(("training", "backend"), "sagemakr",
                     r"training\.backend: .*unknown training backend 'sagemakr'", id="unknown_backend"),
        pytest.param(("dataset", "feature_table"), "no_such_mart",
                     r"dataset\.feature_table: unknown dbt model 'no_such_mart'", id="unknown_feature_table"),
        pytest.param(("gates", "metricz"), {},
                     r"gates\.metricz: unknown field", id="unknown_field_is_rejected"),
        pytest.param(("registry", "primary_metric"), "f1",
                     "registry.primary_metric 'f1' must also appear in gates.metrics", id="primary_metric_must_be_gated"),
        pytest.param(("training", "entry_point"), "include/training/churn/nope.py",
                     r"training\.entry_point: no such file", id="missing_entry_point"),
        pytest.param(("name",), "Churn Model",
                     r"name: String should match pattern", id="invalid_name"),
    ],
)
def test_bad_value_names_the_file_and_the_field(tmp_path, path, value, message):
    data = node = churn_dict()
    *parents, key = path
    for part in parents:
        node = node[part]
    node[key] = value
    spec_path = write_spec(tmp_path, data)
    with pytest.raises(SpecError, match=message) as e:
        load_spec(spec_path)
    assert str(spec_path) in str(e.value)


def test_unknown_dbt_model_in_selection(tmp_path, dbt_manifest):
    data = churn_dict()
    selector = f"+churn_featurez_{tmp_path.name}"  # this test's own: selections are cached per project
    data["dbt"]["select"] = [selector]
    load_spec(write_spec(tmp_path, data))  # dbt has not checked it yet: dbt_build does, the spec stands meanwhile
    from airflow_retrain.dbt.manifest import load_index
    from airflow_retrain.dbt.selection import cache_selection

    cache_selection(dbt_manifest, load_index(dbt_manifest).fingerprint, [selector], None, None)
    with pytest.raises(SpecError, match=rf"dbt\.select\[0\]: dbt selector '\+churn_featurez_{tmp_path.name}' matches no node"):
        load_spec(write_spec(tmp_path, data))



@pytest.mark.slow
def test_method_selectors_are_resolved_like_dbt(tmp_path, dbt_manifest):
    data = churn_dict()
    data["dbt"]["select"] = ["tag:churn", "1+churn_features+"]
    assert load_spec(write_spec(tmp_path, data)).dbt.select == ["tag:churn", "1+churn_features+"]


def test_threshold_needs_a_bound_and_order(tmp_path):
    data = churn_dict()
    data["gates"]["metrics"]["roc_auc"] = {}
    with pytest.raises(SpecError, match=r"gates\.metrics\.roc_auc: .*needs min and/or max"):
        load_spec(write_spec(tmp_path, data))
    data["gates"]["metrics"]["roc_auc"] = {"min": 0.9, "max": 0.8}
    with pytest.raises(SpecError, match="min 0.9 is above max 0.8"):
        load_spec(write_spec(tmp_path, data))


def test_invalid_yaml_reports_line(tmp_path):
    path = write_spec(tmp_path, "name: churn\ndbt: [unclosed\n")
    with pytest.raises(SpecError, match=r"not valid YAML at line"):
        load_spec(path)


def test_not_a_mapping(tmp_path):
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(write_spec(tmp_path, "- a\n- b\n"))


def test_load_specs_reports_bad_files_and_keeps_good_ones(tmp_path):
    good = churn_dict()
    bad = churn_dict()
    bad["name"] = "churn_bad"
    bad["training"]["backend"] = "nope"
    write_spec(tmp_path, good, "a_good.yaml")
    write_spec(tmp_path, bad, "b_bad.yaml")
    dup = churn_dict()
    write_spec(tmp_path, dup, "c_dup.yml")
    loaded = load_specs(tmp_path)
    assert [s.name for s in loaded.specs] == ["churn"]
    assert set(Path(p).name for p in loaded.errors) == {"b_bad.yaml", "c_dup.yml"}
    assert "training.backend" in str(loaded.errors[str(tmp_path / "b_bad.yaml")])
    assert "already used by" in str(loaded.errors[str(tmp_path / "c_dup.yml")])


def test_artifacts_block(tmp_path):
    data = churn_dict()
    assert load_spec(write_spec(tmp_path, data)).artifacts.root is None  # resolved on the worker
    data["artifacts"] = {"root": "s3://ml-artifacts/retrain", "connection_id": "aws_ml"}
    spec = load_spec(write_spec(tmp_path, data))
    assert (spec.artifacts.root, spec.artifacts.connection_id) == ("s3://ml-artifacts/retrain", "aws_ml")


@pytest.mark.parametrize(
    ("artifacts", "message"),
    [
        ({"root": "ml-artifacts/retrain"}, r"artifacts\.root: .*must be a URI with one of the schemes"),
        ({"root": "file://relative"}, r"artifacts\.root: .*absolute path"),
        ({"root": "s3://aws_ml@bucket"}, r"artifacts\.root: .*name the connection in connection_id"),
        ({"connection_id": "aws_ml"}, r"artifacts: .*connection_id is set but root is not"),
        ({"root": "s3://b", "bucket": "x"}, r"artifacts\.bucket: unknown field"),
    ],
)
def test_bad_artifacts_block_names_the_field(tmp_path, artifacts, message):
    data = churn_dict()
    data["artifacts"] = artifacts
    with pytest.raises(SpecError, match=message):
        load_spec(write_spec(tmp_path, data))


def test_dag_passes_the_artifact_store_to_every_task(tmp_path):
    from airflow_retrain.dag_factory import build_dag

    data = churn_dict()
    data["artifacts"] = {"root": "s3://ml-artifacts/retrain", "connection_id": "aws_ml"}
    dag = build_dag(load_spec(write_spec(tmp_path, data)))
    # Every task of the pipeline; the dbt group's per-node tasks only report dbt_build's results.
    stage_tasks = [t for t in dag.tasks if not t.task_id.startswith("dbt.")]
    assert {(t.artifact_root, t.artifact_conn_id) for t in stage_tasks} == {("s3://ml-artifacts/retrain", "aws_ml")}
    dag = build_dag(load_spec(CHURN))
    stage_tasks = [t for t in dag.tasks if not t.task_id.startswith("dbt.")]
    assert {(t.artifact_root, t.artifact_conn_id) for t in stage_tasks} == {(None, None)}
