"""Spec hardening, round two: one spec per registered model, numbers that refuse booleans (every numeric
field of every spec model), S3 bucket names by S3's rules, ``gpu: required`` without a GPU refused at
load, and hostile values in the cloud blocks and the budget."""

from __future__ import annotations

import copy
import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import load_problems, write_spec
from pydantic import BaseModel, ValidationError

from airflow_retrain.dag_factory import collect_pipelines
from airflow_retrain.spec import PipelineSpec, load_spec, s3_bucket_problem

ROOT = Path(__file__).resolve().parents[2]
CHURN = yaml.safe_load((ROOT / "include" / "pipelines" / "churn.yaml").read_text())
SAGEMAKER = yaml.safe_load((ROOT / "include" / "examples" / "sagemaker" / "churn.yaml").read_text())
VERTEX = yaml.safe_load((ROOT / "include" / "examples" / "vertex" / "churn.yaml").read_text())


# --- a registered model belongs to one spec -------------------------------------------------------------


def test_second_spec_on_the_same_registered_model_is_refused_naming_both_files(tmp_path):
    first = write_spec(tmp_path, CHURN, "churn.yaml")
    second = write_spec(tmp_path, {**CHURN, "name": "fraud"}, "fraud.yaml")  # registry.model_name: churn, too
    dags, errors = collect_pipelines(tmp_path)
    assert sorted(dags) == ["churn_retrain"]
    assert list(errors) == [str(second)]
    message = str(errors[str(second)])
    assert message.startswith(f"invalid pipeline spec {second}: registry.model_name: 'churn'")
    assert f"is already the registered model of {first}" in message


def test_one_model_name_on_two_registries_is_two_models(tmp_path):
    write_spec(tmp_path, CHURN, "churn.yaml")
    other = copy.deepcopy(CHURN)
    other["name"] = "churn_eu"
    other["registry"]["connection_id"] = "mlflow_eu"
    write_spec(tmp_path, other, "churn_eu.yaml")
    dags, errors = collect_pipelines(tmp_path)
    assert errors == {}
    assert sorted(dags) == ["churn_eu_retrain", "churn_retrain"]


@pytest.mark.usefixtures("dbt_manifest")
def test_shared_model_through_a_dagbag_spares_the_first_pipeline_and_its_rollback(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    first = write_spec(tmp_path, CHURN, "churn.yaml")
    second = write_spec(tmp_path, {**CHURN, "name": "fraud"}, "fraud.yaml")
    monkeypatch.setenv("RETRAIN_SPECS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert {"churn_retrain", "rollback_churn"} <= set(bag.dag_ids)
    assert not {"fraud_retrain", "rollback_fraud"} & set(bag.dag_ids)
    (where, message), = bag.import_errors.items()  # one report, from the check file (it holds no DAG)
    assert Path(where).name == "retrain_spec_check.py"
    assert str(second) in message and str(first) in message and "registry.model_name" in message


# --- numbers refuse booleans, in every spec model ---------------------------------------------------------

# Every optional block present, so that the walk below reaches every model. Only pydantic validation runs
# (PipelineSpec.model_validate), so both cloud blocks may be present at once.
FULL: dict[str, Any] = copy.deepcopy(CHURN)
FULL["training"]["resources"]["hourly_price_usd"] = 1.5
FULL["training"]["max_cost_usd"] = 10
FULL["training"]["sagemaker"] = copy.deepcopy(SAGEMAKER["training"]["sagemaker"])
FULL["training"]["vertex"] = copy.deepcopy(VERTEX["training"]["vertex"])
FULL["budget"] = {"weekly_usd": 25}
FULL["artifacts"] = {"root": "s3://airflow-retrain-demo/ml"}
FULL["schedule"] = {"assets": ["churn_features"], "cron": "@daily"}
FULL["gates"]["data"].update(min_rows=10, max_null_rate={"default": 0.1, "columns": {"total_charges": 0.2}})
FULL["gates"]["champion"] = {"min_improvement": 0.01, "greater_is_better": True}
FULL["registry"]["approval"] = {"required": True, "timeout_minutes": 60}
FULL["registry"]["mirror"] = {"sagemaker": {"model_package_group": "churn"}}
FULL["registry"]["lease"] = {"wait_seconds": 10, "settle_seconds": 1}
FULL["notify"] = {"email": {"to": ["oncall@example.com"]}, "slack": {"channel": "#ml-oncall"}}


def _unwrap(annotation: Any) -> list[Any]:
    """The types a field annotation admits (Optional/Union/Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def numeric_fields(model: type[BaseModel], data: dict, prefix: tuple = ()) -> list[tuple]:
    """Paths (as in ``data``) of every int/float field of ``model`` and of the models inside it.

    Fails when ``data`` lacks a nested model's block, so a new model is never silently skipped. Unions
    of text and numbers (hyperparameters) take any scalar on purpose and are not numeric fields.
    """
    paths = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = field.alias or name
        path = (*prefix, key)
        admitted = [t for t in _unwrap(field.annotation) if t is not type(None)]
        if any(t is str for t in admitted):
            admitted = [t for t in admitted if isinstance(t, type) and issubclass(t, BaseModel)]
        for kind in admitted:
            origin = typing.get_origin(kind)
            if kind in (int, float):
                paths.append(path)
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                assert isinstance(data.get(key), dict), f"FULL lacks the {'.'.join(path)} block"
                paths += numeric_fields(kind, data[key], path)
            elif origin is dict:
                value_types = _unwrap(typing.get_args(kind)[1])
                numeric = (int in value_types or float in value_types) and str not in value_types
                model_value = isinstance(value_types[0], type) and issubclass(value_types[0], BaseModel)
                if numeric or model_value:
                    assert data.get(key), f"FULL lacks an entry of {'.'.join(path)}"
                    item = next(iter(data[key]))
                    if numeric:
                        paths.append((*path, item))
                    else:
                        paths += numeric_fields(value_types[0], data[key][item], (*path, item))
    return paths


NUMERIC_PATHS = numeric_fields(PipelineSpec, FULL)


def _with(data: dict, path: tuple, value: Any) -> dict:
    changed = copy.deepcopy(data)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


def _validate(data: dict) -> None:
    PipelineSpec.model_validate({**data, "source_path": "/x/p.yaml", "root": str(ROOT)})


def test_the_full_spec_validates_and_the_walk_finds_the_issue_fields():
    _validate(FULL)
    dotted = {".".join(map(str, p)) for p in NUMERIC_PATHS}
    assert {"training.max_cost_usd", "training.sagemaker.volume_size_gb", "gates.data.min_rows"} <= dotted
    assert {"gates.metrics.roc_auc.min", "gates.data.max_null_rate.columns.total_charges"} <= dotted
    assert len(NUMERIC_PATHS) >= 30


@pytest.mark.parametrize("path", NUMERIC_PATHS, ids=lambda p: ".".join(map(str, p)))
@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_is_never_a_number(path, flag):
    with pytest.raises(ValidationError) as e:
        _validate(_with(FULL, path, flag))
    assert [tuple(err["loc"]) for err in e.value.errors()] == [path]


@pytest.mark.parametrize(
    ("path", "field"),
    [(("training", "max_cost_usd"), "training.max_cost_usd"),
     (("training", "sagemaker", "volume_size_gb"), "training.sagemaker.volume_size_gb"),
     (("gates", "data", "min_rows"), "gates.data.min_rows")],
)
def test_the_issue_cases_are_refused_at_load_naming_the_field(tmp_path, path, field):
    base = copy.deepcopy(SAGEMAKER)
    base.setdefault("gates", {}).setdefault("data", {})
    message = load_problems(write_spec(tmp_path, _with(base, path, True)))
    assert f"{field}: Input should be a valid " in message
    assert f"{field}: Input should be a valid integer, got true" in message or f"{field}: Input should be a valid number, got true" in message
    assert "got true (booleans are not numbers)" in message


def test_an_int_is_still_a_float_and_floats_stay_floats(tmp_path):
    spec = load_spec(write_spec(tmp_path, {**CHURN, "budget": {"weekly_usd": 25}}))
    assert spec.budget.weekly_usd == 25.0 and isinstance(spec.budget.weekly_usd, float)
    with pytest.raises(ValidationError):  # a fraction where a count belongs
        _validate(_with(FULL, ("training", "sagemaker", "volume_size_gb"), 30.5))


# --- S3 bucket names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bucket", "reason"),
    [
        ("ab", "3 to 63 characters"),
        ("a" * 64, "3 to 63 characters"),
        ("My_Bucket", "only lowercase letters, digits, hyphens (-) and dots (.)"),
        ("-bucket", "begin and end with a letter or digit"),
        ("bucket.", "begin and end with a letter or digit"),
        ("my..bucket", "two adjacent dots"),
        ("192.168.5.4", "IP address"),
        ("xn--bucket", "reserved prefix"),
        ("sthree-bucket", "reserved prefix"),
        ("bucket-s3alias", "reserved suffix"),
        ("bucket--ol-s3", "reserved suffix"),
    ],
)
def test_bad_sagemaker_bucket_names_the_field(tmp_path, bucket, reason):
    data = copy.deepcopy(SAGEMAKER)
    data["training"]["sagemaker"]["bucket"] = bucket
    message = load_problems(write_spec(tmp_path, data))
    assert "training.sagemaker.bucket: S3 bucket name" in message and reason in message


def test_s3_uri_instead_of_a_bucket_name(tmp_path):
    data = copy.deepcopy(SAGEMAKER)
    data["training"]["sagemaker"]["bucket"] = "s3://airflow-retrain-demo"
    assert "training.sagemaker.bucket: 's3://airflow-retrain-demo': give the bucket's name" in load_problems(
        write_spec(tmp_path, data)
    )


@pytest.mark.parametrize("bucket", ["abc", "my.bucket-1", "a" * 63, "1bucket", "airflow-retrain-demo"])
def test_good_bucket_names_pass(bucket):
    assert s3_bucket_problem(bucket) is None


def test_artifact_root_bucket_follows_s3_rules(tmp_path):
    message = load_problems(write_spec(tmp_path, {**CHURN, "artifacts": {"root": "s3://Shared_Artifacts/ml"}}))
    assert "artifacts.root: 's3://Shared_Artifacts/ml': S3 bucket name 'Shared_Artifacts'" in message


# --- gpu: required where there is no GPU, at load -----------------------------------------------------------


def test_gpu_required_on_a_sagemaker_cpu_instance_is_refused_at_load(tmp_path):
    data = copy.deepcopy(SAGEMAKER)
    data["training"]["resources"].update(instance_type="ml.m5.xlarge", gpu="required")
    message = load_problems(write_spec(tmp_path, data))
    assert "training.resources.gpu: 'required', but training.resources.instance_type ml.m5.xlarge has no GPU" in message
    data["training"]["resources"]["instance_type"] = "ml.g5.xlarge"
    data["training"]["max_cost_usd"] = 100
    assert load_spec(write_spec(tmp_path, data)).training.resources.gpu == "required"


def test_gpu_required_on_a_vertex_machine_without_accelerator_is_refused_at_load(tmp_path):
    data = copy.deepcopy(VERTEX)
    data["training"]["resources"]["gpu"] = "required"
    message = load_problems(write_spec(tmp_path, data))
    assert (
        "training.resources.gpu: 'required', but training.vertex.machine_type n1-standard-4 has no GPU and "
        "training.vertex.accelerator_type is not set"
    ) in message
    data["training"]["vertex"].update(accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1)
    assert load_spec(write_spec(tmp_path, data)).training.vertex.accelerator_count == 1


# --- hostile values in the cloud blocks and the budget ----------------------------------------------------


@pytest.mark.parametrize(
    ("base", "path", "value", "message"),
    [
        (SAGEMAKER, ("training", "sagemaker", "prefix"), "../../other-team", "training.sagemaker.prefix: '../../other-team' has a '.' or '..' segment"),
        (SAGEMAKER, ("training", "sagemaker", "prefix"), "/abs//x", "training.sagemaker.prefix: '/abs//x' is not an object key prefix"),
        (SAGEMAKER, ("training", "sagemaker", "prefix"), "churn runs", "training.sagemaker.prefix: 'churn runs' is not an object key prefix"),
        (VERTEX, ("training", "vertex", "prefix"), "x/\u202egnp.exe", "training.vertex.prefix"),
        (SAGEMAKER, ("training", "sagemaker", "image"), "--entrypoint sh", "training.sagemaker.image: '--entrypoint sh' is not a container image reference"),
        (VERTEX, ("training", "vertex", "image"), "gcr.io/p/img:1\nrm", "training.vertex.image"),
        (SAGEMAKER, ("training", "sagemaker", "subnets"), ["subnet-1; drop"], "training.sagemaker.subnets.0"),
        (SAGEMAKER, ("training", "sagemaker", "kms_key_id"), "alias/a key", "training.sagemaker.kms_key_id"),
        (SAGEMAKER, ("training", "sagemaker", "volume_size_gb"), 10**30, "training.sagemaker.volume_size_gb: Input should be less than or equal to 16384"),
        (SAGEMAKER, ("training", "max_cost_usd"), -1, "training.max_cost_usd: Input should be greater than 0"),
        (SAGEMAKER, ("training", "max_cost_usd"), float("inf"), "training.max_cost_usd: Input should be a finite number"),
        (SAGEMAKER, ("training", "resources", "hourly_price_usd"), 1e300, "training.resources.hourly_price_usd: Input should be less than or equal to 10000"),
        (SAGEMAKER, ("training", "resources", "max_runtime_seconds"), -3600, "training.resources.max_runtime_seconds: Input should be greater than or equal to 60"),
        (VERTEX, ("training", "vertex", "replica_count"), 2**70, "training.vertex.replica_count: Input should be less than or equal to 64"),
        (SAGEMAKER, ("training", "resources", "instance_count"), 2**70, "training.resources.instance_count: Input should be less than or equal to 1000"),
        (VERTEX, ("training", "vertex", "staging_bucket"), "gs://google-models", "training.vertex.staging_bucket: GCS bucket name 'google-models' must not begin with 'goog' or contain 'google'"),
        (VERTEX, ("training", "vertex", "staging_bucket"), "gs://10.0.0.1", "training.vertex.staging_bucket: GCS bucket name '10.0.0.1' must not be formatted as an IP address"),
        (CHURN, ("artifacts",), {"root": "gs://goog-ml/x"}, "artifacts.root: 'gs://goog-ml/x': GCS bucket name 'goog-ml'"),
        (CHURN, ("budget",), {"weekly_usd": -5}, "budget.weekly_usd: Input should be greater than 0"),
        (CHURN, ("budget",), {"weekly_usd": "1e400"}, "budget.weekly_usd: Input should be a valid number"),
        (CHURN, ("registry", "model_name"), "team/churn", "registry.model_name: 'team/churn': MLflow model names cannot contain '/' or ':'"),
        (CHURN, ("registry", "model_name"), "..", "registry.model_name: '..': MLflow refuses names"),
        (CHURN, ("registry", "model_name"), "m" * 257, "registry.model_name: String should have at most 256 characters"),
    ],
)
def test_hostile_cloud_and_budget_values_are_refused_naming_the_field(tmp_path, base, path, value, message):
    assert message in load_problems(write_spec(tmp_path, _with(base, path, value)))


def test_unicode_model_names_and_prefixes_that_clouds_take_still_load(tmp_path):
    data = copy.deepcopy(SAGEMAKER)
    data["registry"]["model_name"] = "churn-modèle (v2)"
    data["training"]["sagemaker"]["prefix"] = "team-a/churn_runs/"
    spec = load_spec(write_spec(tmp_path, data))
    assert spec.registry.model_name == "churn-modèle (v2)"


def test_a_duplicate_key_inside_a_cloud_block_names_its_line(tmp_path):
    text = yaml.safe_dump(SAGEMAKER, sort_keys=False).replace(
        "    bucket: airflow-retrain-demo\n", "    bucket: airflow-retrain-demo\n    bucket: other-bucket\n", 1
    )
    assert text.count("bucket:") == 2
    path = tmp_path / "p.yaml"
    path.write_text(text)
    assert "duplicate key 'bucket' (first at line" in load_problems(path)


def test_the_examples_still_load_and_serialise():
    for example in ("include/pipelines/churn.yaml", "include/examples/sagemaker/churn.yaml", "include/examples/vertex/churn.yaml"):
        data = json.loads(json.dumps(load_spec(ROOT / example).to_dict()))
        assert data["name"] == "churn" and data["training"]["backend"] in ("local", "sagemaker", "vertex"), example
