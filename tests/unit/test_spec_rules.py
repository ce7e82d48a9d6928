"""Spec rules from issue 5: bad inputs are rejected at load time, naming the file and the field.

Every case here was accepted before (or crashed while the DAG was built, or at run time); see
``tests/test_spec_fuzz.py`` for the property-based suite over the same rules.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from airflow_retrain import dag_factory
from airflow_retrain.spec import EMBEDDED_WAREHOUSE_POOL, SpecError, load_spec, load_specs

ROOT = Path(__file__).resolve().parents[2]
CHURN = ROOT / "include" / "pipelines" / "churn.yaml"


def churn_dict() -> dict:
    return yaml.safe_load(CHURN.read_text())


def other_pipeline(name: str) -> dict:
    """The churn spec as another pipeline: its own name and registered model (a model belongs to one spec)."""
    data = churn_dict()
    data["name"] = name
    data["registry"]["model_name"] = name
    return data


def write(tmp_path: Path, data, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def rejected(tmp_path: Path, data, field: str, message: str = "") -> str:
    """Load ``data`` and assert it fails naming the file, ``field`` (``field:`` or ``field.key:``) and ``message``."""
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    text = str(e.value)
    assert str(path) in text
    assert f"{field}:" in text or f"{field}." in text, text  # the field, or a key/item inside it
    assert message in text, text
    return text


def mutate(path: str, value):
    """A churn spec with ``value`` at the dotted ``path`` (``None`` value deletes nothing: it sets null)."""
    data = churn_dict()
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return data


# --- 1. everything the DAG constructor and the DagBag check --------------------------------------


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("not a cron", "not a cron expression of 5 fields"),
        ("61 * * * *", "out of range"),
        ("0 0 * * 8", "out of range"),
        ("0 0 31 2 *", "never fires"),
        ("0 0 30 2 *", "never fires"),
        ("@weekley", "unknown preset '@weekley'"),
        ("", "not a cron expression of 5 fields"),
        ("0 0 * * * *", "not a cron expression of 5 fields"),
    ],
)
def test_schedule_is_validated_like_the_dag_would(tmp_path, schedule, message):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("schedule", schedule), "schedule", message)


@pytest.mark.parametrize("schedule", ["@weekly", "@once", "@continuous", None, "*/15 2 * * 1-5", "0 0 29 2 *", "0 3 L * *"])
def test_valid_schedules_build(tmp_path, schedule):
    spec = load_spec(write(tmp_path, mutate("schedule", schedule)))
    assert spec.schedule == schedule
    dag = dag_factory.build_dag(spec)
    dag.validate()
    assert dag.dag_id == spec.dag_id


def test_tag_longer_than_airflow_allows(tmp_path):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("tags", ["ok", "x" * 101]), "tags", "at most 100")
    assert load_spec(write(tmp_path, mutate("tags", ["x" * 100]))).tags == ["x" * 100]


@pytest.mark.parametrize(
    ("value", "message"),
    [(1700000000, "expected a date"), (True, "expected a date"), ("yesterday", "start_date"), ("0001-01-01", "outside")],
)
def test_start_date_must_be_a_date(tmp_path, value, message):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("start_date", value), "start_date", message)


def test_timezone_is_validated_and_used(tmp_path):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("timezone", "Mars/Olympus"), "timezone", "unknown time zone")
    spec = load_spec(write(tmp_path, mutate("timezone", "Europe/Berlin")))
    dag = dag_factory.build_dag(spec)
    assert str(dag.timezone.name) == "Europe/Berlin"
    assert dag.start_date.isoformat() == "2025-12-31T23:00:00+00:00"


def test_a_spec_whose_dag_fails_to_build_is_reported_and_spares_the_others(tmp_path, monkeypatch):
    """The per-spec boundary: whatever the DAG constructor raises becomes that spec's SpecError."""
    write(tmp_path, churn_dict(), "churn.yaml")
    write(tmp_path, other_pipeline("fraud"), "fraud.yaml")
    real = dag_factory.build_dag

    def build(spec):
        if spec.name == "fraud":
            raise ValueError("something only the DAG constructor knows")
        return real(spec)

    monkeypatch.setattr(dag_factory, "build_dag", build)
    namespace: dict = {}
    assert list(dag_factory.build_dags(namespace, specs_dir=tmp_path)) == ["churn_retrain"]
    assert list(namespace) == ["churn_retrain"]
    with pytest.raises(SpecError) as e:
        dag_factory.raise_spec_errors(tmp_path)
    assert str(tmp_path / "fraud.yaml") in str(e.value)
    assert "something only the DAG constructor knows" in str(e.value)


def test_dagbag_validation_errors_are_caught_in_the_boundary(tmp_path, monkeypatch):
    """A timetable the DagBag would refuse (it validates after the file imported) is caught by the factory."""
    write(tmp_path, churn_dict(), "churn.yaml")
    write(tmp_path, other_pipeline("fraud"), "fraud.yaml")
    monkeypatch.setattr("airflow_retrain.spec.models.validate_schedule", lambda value, **_: value)
    write(tmp_path, dict(other_pipeline("fraud"), schedule="61 * * * *"), "fraud.yaml")
    dags, errors = dag_factory.collect_pipelines(tmp_path)
    assert list(dags) == ["churn_retrain"]
    assert "schedule: the DAG cannot be built" in str(errors[str(tmp_path / "fraud.yaml")])


def test_build_dags_never_raises(tmp_path, monkeypatch):
    write(tmp_path, churn_dict(), "churn.yaml")
    monkeypatch.setattr(dag_factory, "load_specs", lambda _: 1 / 0)
    assert dag_factory.build_dags({}, specs_dir=tmp_path) == {}
    with pytest.raises(SpecError, match="cannot load specs: ZeroDivisionError"):
        dag_factory.raise_spec_errors(tmp_path)


def test_a_missing_or_empty_specs_folder_is_an_error_naming_where_it_looked(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SpecError, match=f"the specs folder does not exist; looked in {re.escape(str(missing))}"):
        dag_factory.raise_spec_errors(missing)
    assert dag_factory.build_dags({}, specs_dir=missing) == {}
    (tmp_path / "README.md").write_text("not a spec")
    with pytest.raises(SpecError, match=f"no \\*.yaml pipeline spec in the specs folder; looked in {re.escape(str(tmp_path))}"):
        dag_factory.raise_spec_errors(tmp_path)


def test_without_a_project_folder_the_error_says_what_to_set(monkeypatch):
    """An installed wheel: no RETRAIN_HOME, no [retrain] home, no checkout around the package."""
    from airflow_retrain import config

    monkeypatch.delenv("RETRAIN_SPECS_DIR", raising=False)
    monkeypatch.delenv("RETRAIN_HOME", raising=False)
    monkeypatch.delenv("RETRAIN_STATE_DIR", raising=False)
    monkeypatch.setattr(dag_factory, "retrain_home", lambda: None)
    monkeypatch.setattr(config, "retrain_home", lambda: None)
    with pytest.raises(SpecError, match="set RETRAIN_HOME .*ships no specs"):
        dag_factory.raise_spec_errors()
    with pytest.raises(RuntimeError, match="never|RETRAIN_STATE_DIR"):
        config.state_dir()


def test_airflow_config_names_home_and_state_dir(monkeypatch, tmp_path):
    from airflow_retrain import config

    monkeypatch.delenv("RETRAIN_HOME", raising=False)
    monkeypatch.delenv("RETRAIN_STATE_DIR", raising=False)
    monkeypatch.setenv("AIRFLOW__RETRAIN__HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRFLOW__RETRAIN__STATE_DIR", str(tmp_path / "state"))
    import airflow.configuration  # noqa: F401 - what every Airflow process has loaded

    assert config.retrain_home() == tmp_path / "home"
    assert config.state_dir() == tmp_path / "state"
    monkeypatch.delenv("AIRFLOW__RETRAIN__STATE_DIR")
    assert config.state_dir() == tmp_path / "home" / ".local"


# --- 5. user errors named -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("a=b", "not a valid identifier"),
        ("nul\x00key", "NUL byte"),
        ("$(touch /tmp/pwned)", "not a valid identifier"),
        ("1st", "not a valid identifier"),
        ("max-depth", "not a valid identifier"),
        ("target_column", "set by the pipeline itself"),
    ],
)
def test_hyperparameter_keys_are_identifiers(tmp_path, key, message):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("training.hyperparameters", {key: 1}), "training.hyperparameters", message)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\x00b", "NUL byte"),
        ("{{ conn.mlflow_default.password }}", "Jinja template marker"),
        ("line\x1bbreak", "control character"),
        (float("nan"), "finite number"),
        (float("inf"), "finite number"),
    ],
)
def test_hyperparameter_values_are_safe(tmp_path, value, message):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("training.hyperparameters", {"depth": value}), "training.hyperparameters", message)


def test_hyperparameters_that_collide_in_sm_hp(tmp_path):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("training.hyperparameters", {"lr": 1, "LR": 2}), "training.hyperparameters", "SM_HP_LR")


@pytest.mark.parametrize("value", ["$(id)", "`id`", "a $(curl x | sh) b"])
def test_command_substitution_in_a_value_is_refused(tmp_path, value):
    """Arguments here, but a training image's shell entry script may expand ``SM_HP_*``: refuse ``$(`` and backticks."""
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("training.hyperparameters", {"note": value}), "training.hyperparameters", "shell command")


def test_ordinary_text_values_are_kept(tmp_path):
    spec = load_spec(write(tmp_path, mutate("training.hyperparameters", {"objective": "binary:logistic", "cost": "$5"})))
    assert spec.training.hyperparameters == {"objective": "binary:logistic", "cost": "$5"}


@pytest.mark.parametrize(
    ("path", "value", "field", "message"),
    [
        ("training.resources.hourly_price_usd", float("nan"), "training.resources.hourly_price_usd", "finite"),
        ("training.resources.hourly_price_usd", float("inf"), "training.resources.hourly_price_usd", "finite"),
        ("registry.min_improvement", float("inf"), "registry.min_improvement", "finite"),
        ("registry.min_improvement", float("nan"), "registry.min_improvement", "finite"),
        ("registry.min_improvement", True, "registry.min_improvement", "valid number"),
        ("retries", True, "retries", "valid integer"),
        ("retries", 1.0, "retries", "valid integer"),
        ("catchup", "yes", "catchup", "valid boolean"),
        ("registry.greater_is_better", 1, "registry.greater_is_better", "valid boolean"),
        ("dataset.min_rows", True, "dataset.min_rows", "valid integer"),
        ("dataset.holdout_fraction", True, "dataset.holdout_fraction", "valid number"),
        ("gates.metrics.roc_auc", {"min": True}, "gates.metrics.roc_auc.min", "valid number"),
        ("training.resources.instance_count", True, "training.resources.instance_count", "valid integer"),
    ],
)
def test_numbers_are_real_numbers(tmp_path, path, value, field, message):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate(path, value), field, message)


def test_duplicate_yaml_keys_are_rejected_with_their_line(tmp_path):
    text = CHURN.read_text().replace("retries: 1\n", "retries: 1\nretries: 5\n")
    text_path = write(tmp_path, text)
    with pytest.raises(SpecError) as e:
        load_spec(text_path)
    line = text.splitlines().index("retries: 5") + 1
    assert f"not valid YAML at line {line}: duplicate key 'retries'" in str(e.value)
    nested = CHURN.read_text().replace("  max_depth: 4\n", "  max_depth: 4\n    max_depth: 6\n")
    with pytest.raises(SpecError, match="duplicate key 'max_depth'"):
        load_spec(write(tmp_path, nested))
    with pytest.raises(SpecError, match="duplicate key 'min'"):
        load_spec(write(tmp_path, CHURN.read_text().replace("{min: 0.80}", "{min: 0.80, min: 0.1}")))


@pytest.mark.parametrize("table", ["marts.churn_features", '"warehouse"."marts"."churn_features"', "other.churn_features"])
def test_schema_prefix_on_feature_table_is_rejected(tmp_path, table):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("dataset.feature_table", table), "dataset.feature_table", "schema prefix is not allowed")


def test_target_column_equal_to_id_column(tmp_path):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("dataset.target_column", "customer_id"), "dataset", "label cannot be the example id")


@pytest.mark.parametrize("selector", ["--profiles-dir=/etc", "-s", "model\x00"])
def test_dbt_selectors_are_not_flags(tmp_path, selector):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("dbt.select", [selector]), "dbt.select")


def test_upper_case_yaml_files_are_loaded_and_hidden_files_skipped(tmp_path):
    write(tmp_path, churn_dict(), "CHURN.YAML")
    write(tmp_path, other_pipeline("fraud"), "fraud.Yml")
    write(tmp_path, other_pipeline("swap"), ".churn.yaml")
    loaded = load_specs(tmp_path)
    assert sorted(s.name for s in loaded.specs) == ["churn", "fraud"]
    assert loaded.errors == {}


def test_nul_bytes_are_refused_in_every_field(tmp_path):
    """Airflow's metadata DB (Postgres) stores no NUL byte: one in any field would break the whole DAG file."""
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("description", "a\x00b"), "description", "NUL byte")
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("registry.model_name", "churn\x00"), "registry.model_name", "NUL byte")
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("gates.metrics", {"roc\x00auc": {"min": 0.1}, "roc_auc": {"min": 0.8}}), "gates.metrics")


def test_non_utf8_file_is_an_error_not_a_crash(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"name: \xff\xfe\n")
    write(tmp_path, churn_dict(), "churn.yaml")
    loaded = load_specs(tmp_path)
    assert [s.name for s in loaded.specs] == ["churn"]
    assert "not UTF-8" in str(loaded.errors[str(tmp_path / "bin.yaml")])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("training.environment", ["AIRFLOW_CONN_X"], "never reach the training script"),
        ("training.environment", ["SM_MODEL_DIR"], "never reach the training script"),
        ("training.environment", ["A=B"], "not a valid environment variable name"),
        ("training.env", {"_AIRFLOW_WWW_USER_PASSWORD": "x"}, "never reach the training script"),
        ("training.env", {"MODE": "a\x00b"}, "NUL byte"),
    ],
)
def test_training_environment_names(tmp_path, field, value, message):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate(field, value), field, message)


# --- 6. the spec stays inside the project --------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("training.entry_point", "/etc/passwd", "is an absolute path"),
        ("training.entry_point", "../../../../../../etc/passwd", "outside the project root"),
        ("training.entry_point", "include/../../x.py", "outside the project root"),
        ("dbt.project_dir", "/tmp", "is an absolute path"),
        ("dbt.project_dir", "..", "outside the project root"),
    ],
)
def test_paths_stay_inside_the_project(tmp_path, field, value, message):
    assert "invalid pipeline spec" in rejected(tmp_path, mutate(field, value), field, message)


def test_symlink_out_of_the_project_is_refused(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "include" / "pipelines").mkdir(parents=True)
    os.symlink(ROOT / "dbt", project / "dbt")  # another tree: outside this project's root
    outside = tmp_path / "outside.py"
    outside.write_text("print('not yours')\n")
    os.symlink(outside, project / "include" / "train.py")
    monkeypatch.setenv("RETRAIN_HOME", str(project))
    data = mutate("training.entry_point", "include/train.py")
    path = write(project / "include" / "pipelines", data)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert "training.entry_point: 'include/train.py' resolves to" in str(e.value)
    assert "dbt.project_dir: 'dbt' resolves to" in str(e.value)


# --- 8. the embedded warehouse is shared through a pool ------------------------------------------


def test_warehouse_tasks_run_in_the_embedded_pool(tmp_path):
    dag = dag_factory.build_dag(load_spec(CHURN))
    assert dag.get_task("dbt_build").pool == EMBEDDED_WAREHOUSE_POOL
    assert dag.get_task("export_dataset").pool == EMBEDDED_WAREHOUSE_POOL
    assert dag.get_task("train").pool == "default_pool"
    other = load_spec(write(tmp_path, mutate("warehouse_connection_id", "analytics_pg")))
    assert dag_factory.build_dag(other).get_task("dbt_build").pool == "default_pool"
    explicit = load_spec(write(tmp_path, mutate("warehouse_pool", "duckdb_file")))
    assert dag_factory.build_dag(explicit).get_task("export_dataset").pool == "duckdb_file"
    none = load_spec(write(tmp_path, mutate("warehouse_pool", None)))
    assert dag_factory.build_dag(none).get_task("dbt_build").pool == "default_pool"
    assert "invalid pipeline spec" in rejected(tmp_path, mutate("warehouse_pool", "no spaces allowed"), "warehouse_pool", "not a valid Airflow pool name")
